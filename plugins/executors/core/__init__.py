"""The executor core shared by every engine: requests, attempts, deadlines, retries, failure
aggregation and output checks (:mod:`.engine`), the lifecycle (:mod:`.executor`), the records
(:mod:`.records`), the live node (:mod:`.nodes`), the watchdog (:mod:`.watchdog`) and the
handler's answer checks (:mod:`.outputs`). An engine (``threaded``, ``ray``) plugs in where its
workers live and how one batch runs on one of them."""
