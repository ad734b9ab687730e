# Stand-in for the official `nginx` image (scripts/compose-test, no registry): Debian's nginx
# with the official image's user (nginx, uid 101), curl for the health check, and logs on the
# container's stdout and stderr. compose.yaml mounts the configuration (scripts/docker/nginx.conf).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 101 nginx \
 && useradd --system --gid nginx --uid 101 --no-create-home --home-dir /nonexistent --shell /bin/false nginx \
 && apt-get update \
 && apt-get install -y --no-install-recommends nginx curl \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
