from django.apps import AppConfig


class FrontendConfig(AppConfig):
    name = "frontend"
    verbose_name = "Member web app"

    def ready(self) -> None:
        # The receivers module imports models, which only exist once the app registry is ready.
        from frontend import receivers

        receivers.connect()
