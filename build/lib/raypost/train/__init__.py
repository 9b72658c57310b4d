"""One trial: a Ray Train ``TorchTrainer`` job whose workers run the shared DeepSpeed loop.

Public: ``raypost.train.launch`` (``build_trainer``, ``Scaling``) and ``raypost.train.engine``
(``initialize_engine``, ``make_scheduler``, ``resolve_device``: the engine every worker builds,
which the benchmarks build too). ``raypost.train._internal`` (the worker loop) is imported by
nothing outside this package. ``TrainConfig`` lives with the recipes, which all list it.
"""
