from django.apps import AppConfig


class CurationConfig(AppConfig):
    name = "curation"
    verbose_name = "Curation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_migrate

        from curation import checks, receivers
        from curation.compat import rq_callbacks
        from curation.models import AnnotationRound
        from curation.services.round_media import on_members_changed

        # No sender: post_migrate fires once per app, and each app's permissions are created by
        # its own post_migrate; the roles are synced after the last app's.
        post_migrate.connect(_sync_roles_after_migrate, dispatch_uid="curation.sync_roles")
        del checks  # imported for its @register
        rq_callbacks.install()
        receivers.connect()
        # Removing an annotator from a round ends the media links they could have kept.
        m2m_changed.connect(
            on_members_changed,
            sender=AnnotationRound.members.through,
            dispatch_uid="curation.round_media",
        )


def _sync_roles_after_migrate(app_config: AppConfig, **kwargs) -> None:
    """Models added by later migrations bring new permissions; give them to the roles.

    Also runs after a test database flush, which empties the groups' permission links.
    """
    from django.apps import apps

    from curation.roles import sync_roles

    if app_config is list(apps.get_app_configs())[-1]:
        sync_roles()
