"""Studies: a baseline, steps, a mode and seeds (:mod:`.spec`), their configurations (:mod:`.plan`),
the SQLite results store (:mod:`.store`), the executors that train what the store lacks
(:mod:`.runner`), the report (:mod:`.report`, the statistics in :mod:`.statistics`), the per-class
report of multilabel studies (:mod:`.class_report`) and the built-in study files (:mod:`.builtin`)."""
