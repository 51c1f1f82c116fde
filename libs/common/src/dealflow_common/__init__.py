"""The Dealflow platform shared by every service.

Importing any module here has no side effect: engines, brokers and apps are built only
by a service's `bootstrap`.
"""
