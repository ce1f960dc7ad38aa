# vspc, the virtual serial port concentrator, as a container image.
#
#   docker build -t vspc .
#   docker run -d --name vspc -v vspc-data:/var/lib/vspc -e VSPC_ADMIN_TOKEN="$(openssl rand -hex 32)" \
#     -p 13370:13370 -p 127.0.0.1:13371:13371 -p 127.0.0.1:10000-10099:10000-10099 vspc
#   docker exec vspc node /app/dist/src/cli/vspc-admin.js list    # uses the same VSPC_ADMIN_TOKEN
#
# The admin API listens on all interfaces of the container (below), so vspc refuses to
# start without an admin token: VSPC_ADMIN_TOKEN, or --admin-token-file with a mounted
# secret (e.g. /run/secrets/...). A config file: mount it and add --config FILE to CMD.
# `docker kill -s HUP vspc` reloads it; `docker stop` shuts down cleanly (tini passes
# SIGTERM on; vspc needs a few seconds at most, within docker's default 10 s).
#
# Client ports: each VM serial port gets a telnet port from --port-range (default
# 10000-19999; with TLS also port + 10000). EXPOSE below does not list them: publish the
# part of the range you use (-p, as above), or run with --network host and override
# CMD so that the admin API and client ports stay on 127.0.0.1.

# --- build: compile TypeScript, build better-sqlite3's and vspc's native addons -------
FROM node:20-bookworm AS build
# better-sqlite3 downloads a prebuilt binary if it can, else compiles from source.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# npm ci also builds vspc's own native addon (ptys, unix socket peer credentials) with
# node-gyp, against this Node's headers (no download).
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json ./
COPY src/native ./src/native
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev

# --- runtime ---------------------------------------------------------------------------
FROM node:20-bookworm-slim
# tini as PID 1 forwards SIGTERM to node (vspc then shuts down cleanly) and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 vspc \
 && useradd --uid 10001 --gid vspc --no-create-home --home-dir /var/lib/vspc \
      --shell /usr/sbin/nologin vspc \
 && mkdir -p /var/lib/vspc \
 && chown vspc:vspc /var/lib/vspc
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/src/native/build/Release/vspc_native.node ./src/native/build/Release/vspc_native.node
# The SQLite database (and its -wal/-shm files) live here. A bind-mounted directory
# must be writable by uid 10001.
WORKDIR /var/lib/vspc
VOLUME /var/lib/vspc
USER vspc
# 13370: ESXi hosts (telnet); 13371: admin API; 13372: ESXi hosts (telnets, only with
# --cert/--key).
EXPOSE 13370 13371 13372
ENTRYPOINT ["/usr/bin/tini", "--"]
# Inside a container loopback is unreachable from outside, so the admin API and the
# per-VM client ports listen on all interfaces here. The admin API then requires a
# token (see above); it is plain HTTP unless --admin-cert/--admin-key are added, and
# plain client ports carry console traffic in clear text: publish 13371 and the client
# ports only on a trusted address (e.g. -p 127.0.0.1:...), or protect them otherwise.
# For TLS, mount a certificate and key readable by uid 10001 and add --cert/--key (and
# --admin-cert/--admin-key) to this command.
# The health check reads the token from VSPC_ADMIN_TOKEN; with --admin-token-file or
# --admin-cert, override it (e.g. add --token-file / --admin-ca to its command).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["node", "/app/dist/src/cli/vspc-admin.js", "status"]
CMD ["node", "/app/dist/src/cli/vspc.js", "--db", "/var/lib/vspc/vspc.db", "--admin-listen", "0.0.0.0:13371", "--client-listen-host", "0.0.0.0"]
