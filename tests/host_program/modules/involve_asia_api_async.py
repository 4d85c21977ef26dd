"""The host's async sibling of the API module, as in WeeklyReporter: it reuses the API module's
ResourceMonitor, printing the resource report on each retry and the run time at the end."""

import asyncio

from modules.involve_asia_api import ResourceMonitor


class AsyncInvolveAsiaAPI:
    """The part of the async client that leans on ResourceMonitor."""

    def __init__(self) -> None:
        self.resource_monitor = ResourceMonitor()

    async def _retry(self, page: int, retry: int) -> None:
        await asyncio.sleep(0)
        self.resource_monitor.print_resource_status(f"第{page}页超时重试{retry}")

    def performance_test(self) -> dict[str, object]:
        """One retry's report, then the run time (the host's --performance-test)."""
        asyncio.run(self._retry(15, 2))
        return self.resource_monitor.get_runtime_info()
