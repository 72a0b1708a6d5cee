"""The margin engine (a pure numpy core in ``riskengine.core``) and its Django-side parameters."""
