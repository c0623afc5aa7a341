from django.apps import AppConfig


class CurationConfig(AppConfig):
    name = "curation"
    verbose_name = "Curation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from curation.compat import rq_callbacks

        post_migrate.connect(_sync_roles_after_migrate, sender=self)
        rq_callbacks.install()


def _sync_roles_after_migrate(**kwargs) -> None:
    """Models added by later migrations bring new permissions; give them to the roles."""
    from curation.roles import sync_roles

    sync_roles()
