"""Routers: one channel's traffic shared among several applications (destinations).

``base`` holds the router contract and the plumbing every router type shares,
``from_address`` the built-in router type, ``registry`` the router types by name,
``manager`` the RouterManager the API and the service use.
"""
