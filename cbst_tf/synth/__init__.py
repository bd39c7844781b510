"""The embedded procedural street-scene domain-adaptation benchmark (``cbst-tf data synth``).

``geometry`` (per-domain camera/object statistics) -> ``scene`` + ``objects`` + ``canvas``
(layout -> per-pixel train ids, depth, parts, surface coordinates) -> ``style`` +
``domains`` (appearance models -> RGB) -> ``writers`` (GTA5/Cityscapes/NTHU layouts) ->
``generate.synthesize`` (orchestration); ``probe`` holds the colour-alone checks.
"""
