"""Start local Jupyter kernels with their sockets encrypted (CurveZMQ) when the kernel supports it.

ipykernel 7 logs "Kernel is running over TCP without encryption" at every start unless the
client that launches it provisions CurveZMQ keys. JupyterLab can be told to
(``--MappingKernelManager.transport_encryption=auto``), but the clients that execute the book's
notebooks (Jupyter Book's jupyter-cache, nbval, nbconvert) create their kernel managers with no
configuration at all. What they all honour is the default kernel provisioner, chosen by the
environment variable ``JUPYTER_DEFAULT_PROVISIONER_NAME``; the Makefile sets it to this one.

It is jupyter_client's own local provisioner with ``transport_encryption="auto"``: keys are made
only for kernels whose kernelspec declares CurveZMQ support (ipykernel 7's does), and any other
kernel starts exactly as before.
"""

from __future__ import annotations

from typing import Any

from jupyter_client.provisioning import LocalProvisioner

NAME = "encrypted-local-provisioner"  # the entry point in pyproject.toml


class EncryptedLocalProvisioner(LocalProvisioner):
    """jupyter_client's LocalProvisioner, asking for CurveZMQ keys unless the caller chose."""

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("transport_encryption", "auto")
        return await super().pre_launch(**kwargs)
