"""Faithfulness metrics for CAMs: how much the model's decision depends on what a map points at.

:mod:`~onnxcam.evaluation.metrics` holds the formulas (AUC, Average Drop, Increase in
Confidence, pointing games, Spearman's ρ) on plain arrays; :mod:`~onnxcam.evaluation.perturb`
makes the perturbed inputs (deletion, insertion, ROAD's imputation); :mod:`~onnxcam.evaluation.faithfulness`
runs them through the model in batches and gathers one :class:`MethodScores` per method;
:mod:`~onnxcam.evaluation.sanity` is Adebayo et al.'s model-randomisation check.
"""
