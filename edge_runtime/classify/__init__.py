"""Sound classes of 1 s windows: the log-mel front end and the labels command.

See :mod:`.features` (the log-mel front end the node, the data builder and the evaluation share)
and :mod:`.cli` (``edge-runtime run classify -i in.wav``: timestamped labels); the pipeline node is
:class:`edge_runtime.nodes.classify.Classify`. Nothing is imported here: the node reads
:mod:`.features` without the command.
"""
