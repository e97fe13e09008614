"""DataTransfer (DESIGN §11): from the incoming repositories to the nodes' partitions.

:mod:`.space` holds the disks' figures and the seed's "virtual free disk"; :mod:`.planner`
places a runid's images on partitions (a pure function); :mod:`.store` turns a plan into
``transfer`` rows; :mod:`.copy` copies planned files over the nodes' connections and verifies
them on both ends. The reads shown by the faces are in :mod:`spica_core.read_model.transfer`.
"""
