# Stand-in for the official `rabbitmq:4.0-management` image, built from Debian's packages when no
# image registry is reachable (scripts/compose-test). Same user, paths, ports and commands as the
# official image where compose.yaml relies on them: user `rabbitmq`, data in /var/lib/rabbitmq,
# AMQP on 5672, the management UI on 15672, `rabbitmq-diagnostics` for the health check, the
# default user from RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS (RabbitMQ itself reads them),
# logs on stdout.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && rabbitmq-plugins enable --offline rabbitmq_management >/dev/null \
 && printf '%s\n' 'listeners.tcp.default = 5672' 'management.tcp.port = 15672' \
      'log.console = true' 'log.file = false' >/etc/rabbitmq/rabbitmq.conf \
 # no Erlang cookie baked into the image: the node makes its own on its first start
 && rm -rf /var/lib/rabbitmq/.erlang.cookie /var/lib/rabbitmq/* /var/log/rabbitmq/* \
 && chown rabbitmq:rabbitmq /var/lib/rabbitmq
ENV HOME=/var/lib/rabbitmq \
    PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER rabbitmq
EXPOSE 5672 15672
CMD ["rabbitmq-server"]
