"""The headless service: ``edge-runtime serve`` (daemon), systemd notify, metrics, its config, the unit.

See :mod:`edge_runtime.service.daemon` for the behaviour, :mod:`.config` for the config file,
:mod:`.metrics` for the endpoint, :mod:`.notify` for the systemd protocol and :mod:`.unit` for
the generated systemd unit (``edge-runtime install-service``).
"""
