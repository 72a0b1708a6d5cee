"""Signals of the risk engine's Django side.

``parameter_set_activated`` is sent (``sender=ParameterSet``, kwarg ``parameter_set``) after the
transaction that made a set active has committed, so receivers (the full sweep) always read the
new set. It is never sent for a transaction that rolled back.
"""

from django.dispatch import Signal

parameter_set_activated = Signal()
