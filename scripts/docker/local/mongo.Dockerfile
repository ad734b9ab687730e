# Stand-in for the official `mongo` image (scripts/compose-test, no registry): the project's
# MongoDB stand-in (scripts/mongo-standin: mongoeco's wire server behind our launcher) on port
# 27017, data in /data/db, run as user `mongodb` like the official image. `mongosh` here is a
# one-trick shim for compose.yaml's health check (`db.adminCommand('ping').ok`), nothing more.
# Build context: scripts/.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY mongo-standin/requirements.txt /opt/mongo-standin/requirements.txt
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/mongo-standin/venv \
 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/mongo-standin/venv/bin/pip install \
      --quiet --no-cache-dir --disable-pip-version-check -r /opt/mongo-standin/requirements.txt \
 && useradd --system --user-group --home-dir /data/db --no-create-home --shell /usr/sbin/nologin mongodb \
 && mkdir -p /data/db \
 && chown mongodb:mongodb /data/db
COPY mongo-standin/launcher.py /opt/mongo-standin/launcher.py
COPY docker/local/mongosh /usr/local/bin/mongosh
USER mongodb
EXPOSE 27017
CMD ["/opt/mongo-standin/venv/bin/python", "/opt/mongo-standin/launcher.py", "--host", "0.0.0.0", "--port", "27017", "--data-dir", "/data/db"]
