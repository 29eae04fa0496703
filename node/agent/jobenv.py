"""How a job reaches the node's broker: the environment the agent gives every pipeline.

Components that talk MQTT themselves (``mqtt_source`` reading devices) connect to the same
broker as their agent, with the same TLS files and login, so a deployment made by
``ion deploy`` (client certificates, ACLs) works for them too.  The password goes through the
environment of the agent's own child, readable only by the same user.
"""

from __future__ import annotations

from ion.config.broker import BrokerConfig

URL = "ION_BROKER_URL"
CA_FILE = "ION_BROKER_CA_FILE"
CERT_FILE = "ION_BROKER_CERT_FILE"
KEY_FILE = "ION_BROKER_KEY_FILE"
USERNAME = "ION_BROKER_USERNAME"
PASSWORD = "ION_BROKER_PASSWORD"  # noqa: S105 - the name of a variable, not a password


def broker_env(broker: BrokerConfig) -> dict[str, str]:
    env = {URL: broker.url}
    tls = broker.tls
    if tls is not None:
        for name, path in (
            (CA_FILE, tls.ca_file),
            (CERT_FILE, tls.cert_file),
            (KEY_FILE, tls.key_file),
        ):
            if path is not None:
                env[name] = str(path)
    if broker.username is not None:
        env[USERNAME] = broker.username
        if broker.password is not None:
            env[PASSWORD] = broker.password
    return env
