"""The node agent: one asyncio process per machine.  See ``node.agent.service.Agent``."""
