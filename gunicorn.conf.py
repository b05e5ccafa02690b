"""gunicorn settings for ai-proxy; every value can be set through the environment."""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "gthread"
# A proxied request spends nearly all its time waiting on an upstream (seconds, or minutes for a
# long stream), not on the CPU, so one worker serves many at once: 32 threads cost ~8 MB of stacks.
threads = int(os.environ.get("AI_PROXY_THREADS", "32"))
# gthread workers heartbeat from their main loop, so a long stream never trips `timeout`; it only
# catches a worker that is truly stuck.
timeout = int(os.environ.get("AI_PROXY_WORKER_TIMEOUT", "120"))
# On SIGTERM in-flight answers and streams get this long to finish (Heroku allows 30 s).
graceful_timeout = int(os.environ.get("AI_PROXY_GRACEFUL_TIMEOUT", "30"))
# Longer than the idle timeout of nginx's and most load balancers' upstream keep-alive (60 s).
keepalive = int(os.environ.get("AI_PROXY_KEEPALIVE", "75"))
worker_connections = 1000
# Build the app once in the master: a bad config fails before any worker starts, and workers
# share the loaded code copy-on-write.
preload_app = True
accesslog = None  # the app writes its own access line with model, attempts and latencies
errorlog = "-"
loglevel = os.environ.get("AI_PROXY_LOG_LEVEL", "info").lower()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proxy_allow_ips = forwarded_allow_ips
