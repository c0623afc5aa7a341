"""Training runs, by responsibility:

- `inputs`: defaults, dataset roles, validation, `create_training_run`;
- `config`: a run's output folder, its engine `TrainConfig` and platform lineage;
- `execute`: `execute_training_run`, which trains inside any job;
- `jobs`: enqueue, cancel and resume a run as a `train` job.
"""
