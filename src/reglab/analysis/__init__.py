"""Analyses of trained models, used by the reproductions: memorization (P(correct), critical sample
ratio; :mod:`.memorization`), batch-norm diagnostics (:mod:`.batchnorm`), test-time adaptation
(source / norm / TENT; :mod:`.tta`) and the plots of runs (:mod:`.plots`)."""
