from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Automated agents"

    def ready(self) -> None:
        # Imported here, not at module level: these modules import models, which exist only once
        # the app registry is ready. Importing ``tasks`` registers the Celery tasks with the app.
        from agents import demo, receivers, tasks  # noqa: F401
        from riskengine.demo import demo_seed_step_register

        receivers.connect()
        # The demo venue (riskengine.demo, below this app) seeds a funding account and policies.
        demo_seed_step_register(demo.agents_demo_seed)
