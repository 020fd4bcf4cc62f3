"""Layer L4: the controllers that close the loop; for now, the durable event dispatcher."""

from loopline.loop.dispatcher import Dispatcher, DispatchReport, Subscription

__all__ = ["DispatchReport", "Dispatcher", "Subscription"]
