"""ION runtime: machine learning in production across edge, gateway and cloud, over MQTT.

This package holds the ION itself (model, authoring format, validation, topic map, wire
conversion) and the operator's CLI.  The node agent is ``node``; what runs beside the broker
is ``broker``.
"""

__version__ = "0.1.0"
