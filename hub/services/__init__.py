"""The domain: one module per concern, over the store and the bus.

No HTTP and no WebSocket in here: transports call these functions with an
authenticated :class:`~hub.services.context.Actor` and turn the results (or
the :class:`~protocol.errors.RpcError` raised) into their own wire format.
"""
