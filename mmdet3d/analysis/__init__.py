"""Tools-level modules built on the models and apis: pictures of samples, latency benchmarks, distillation analysis."""
