from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from training import admin_loops, admin_sweeps, signals  # noqa: F401  (signals connects the job status receiver)

        admin_loops.register()
        admin_sweeps.register()
