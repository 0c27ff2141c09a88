"""Training: configuration as data, the train loop in phases, distillation, calibration, evaluation, tracking."""
