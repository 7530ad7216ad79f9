#!/usr/bin/env bash
# The envtest tier's cluster: a REAL kube-apiserver and kube-controller-manager (with etcd) on
# 127.0.0.1 only, no kubelet or scheduler (tests/envtest supplies a stand-in kubelet). The model
# is controller-runtime's envtest. Everything comes from Debian bookworm packages.
#
#   scripts/envtest.sh build    # once: apt deps, Debian's `kubernetes` source, make (~5 min on 2 cores)
#   scripts/envtest.sh start    # etcd + kube-apiserver + kube-controller-manager (~10 s)
#   scripts/envtest.sh stop     # kills only the PIDs that `start` recorded in $RUN/*.pid
#   scripts/envtest.sh env      # prints `export KUBECONFIG=...` (admin, system:masters)
#   scripts/envtest.sh sa-kubeconfig NS SA      # a kubeconfig acting as that ServiceAccount
#   scripts/envtest.sh restart-apiserver        # e.g. with ADMISSION=OwnerReferencesPermissionEnforcement
#   scripts/envtest.sh bin-dir  # prints the cached binaries' directory; exit 1 when not built
#
# Binaries are cached OUTSIDE the checkout, keyed by version:
#   ${DISTSYNC_ENVTEST_CACHE:-~/.cache/distsync-envtest}/v1.20.2/bin/{kube-apiserver,kube-controller-manager}
# The build tree (2.2 GB, most of it Go's build cache) is deleted after a successful build
# unless KEEP_BUILD=1.
#
# Why Debian's source: it is the only Kubernetes server this machine kind can get without
# Docker or a download outside the Debian archive. Its 1.20.2 lags the chart's target (1.27+);
# tests/envtest/adapt.py lists what the tests adapt for that.
set -euo pipefail

VERSION=v1.20.2
CACHE=${DISTSYNC_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/distsync-envtest}
BIN=${ENVTEST_BIN:-$CACHE/$VERSION/bin}
BUILD=${ENVTEST_BUILD:-$CACHE/$VERSION/build}
RUN=${RUN:-$CACHE/run}                    # certs, tokens, etcd data, logs, pids
ETCD_PORT=${ETCD_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
APISERVER_PORT=${APISERVER_PORT:-16443}
KCM_PORT=${KCM_PORT:-10357}
KCM=${KCM:-1}
# Controllers that need a cloud, nodes or volumes are off: nothing here provides them.
KCM_CONTROLLERS=${KCM_CONTROLLERS:-*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-ttl}

built() { [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; }

build() {
  if built; then echo "envtest: cached binaries in $BIN"; return 0; fi
  # deb-src for bookworm (the default image lists only binary indexes).
  local src=/etc/apt/sources.list.d/debian.sources update=0
  if [ -f "$src" ] && ! grep -q 'deb-src' "$src"; then
    sed -i 's/^Types: deb$/Types: deb deb-src/' "$src"; update=1
  fi
  # golang-go 1.19; reflect2 1.0.2 as Go source (see below); make/rsync/jq for hack/.
  local pkgs=(golang-go etcd-server dpkg-dev make rsync jq openssl curl golang-github-modern-go-reflect2-dev)
  local need=() p
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ] || [ $update = 1 ]; then
    apt-get update -qq
    [ ${#need[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  mkdir -p "$BUILD" && cd "$BUILD"
  # kubernetes 1.20.5+really1.20.2-1.1+deb12u1: .dsc + 34 MB orig.tar.gz (vendor/ included).
  ls kubernetes_*.dsc >/dev/null 2>&1 || apt-get source --download-only kubernetes
  [ -d k8s ] || dpkg-source -x kubernetes_*.dsc k8s
  cd k8s
  # The vendored modern-go/reflect2 v1.0.1 links runtime internals by name and breaks with
  # Go >= 1.18; Debian's 1.0.2 sources fix that.
  if [ ! -f vendor/github.com/modern-go/reflect2/go_above_118.go ]; then
    rm -rf vendor/github.com/modern-go/reflect2 && mkdir -p vendor/github.com/modern-go/reflect2
    cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
       /usr/share/gocode/src/github.com/modern-go/reflect2/*.s vendor/github.com/modern-go/reflect2/
  fi
  # 1.20 builds in GOPATH mode through hack/ (a plain module-mode `go build` fails with
  # "updates to go.mod needed"), and make generates zz_generated.openapi.go.
  export GOCACHE=$BUILD/gocache HOME=$BUILD/home GOPROXY=off
  mkdir -p "$HOME"
  make WHAT=cmd/kube-apiserver
  make WHAT=cmd/kube-controller-manager
  mkdir -p "$BIN.tmp"
  cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$BIN.tmp/"
  "$BIN.tmp/kube-apiserver" --version | grep -q "$VERSION"
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  cd /
  [ "${KEEP_BUILD:-0}" = 1 ] || rm -rf "$BUILD"
  echo "envtest: built $VERSION into $BIN"
}

certs() {
  mkdir -p "$RUN" && cd "$RUN"
  [ -f ca.crt ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=envtest-ca \
      -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key \
      -out apiserver.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\n' > san.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out apiserver.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  # Static tokens (token,user,uid,"groups"): the admin for the tests' setup, one for the KCM.
  local admin kcmt
  admin=$(openssl rand -hex 16); kcmt=$(openssl rand -hex 16)
  printf '%s,admin,admin,"system:masters"\n%s,system:kube-controller-manager,kcm,"system:masters"\n' \
      "$admin" "$kcmt" > tokens.csv
  kubeconfig admin.kubeconfig admin "$admin" default
  kubeconfig kcm.kubeconfig kcm "$kcmt" default
}

kubeconfig() {  # file user token namespace
  cat > "$RUN/$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $RUN/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: envtest
  context: {cluster: envtest, user: $2, namespace: $4}
current-context: envtest
KC
}

wait_ready() {  # url seconds pidfile
  local tok i
  tok=$(cut -d, -f1 "$RUN/tokens.csv" | head -1)
  for i in $(seq "$2"); do
    curl -fsS --cacert "$RUN/ca.crt" -H "Authorization: Bearer $tok" "$1" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$3")" 2>/dev/null || { echo "envtest: $3 exited; see $RUN/logs" >&2; return 1; }
    sleep 1
  done
  echo "envtest: timeout waiting for $1; see $RUN/logs" >&2; return 1
}

start() {
  built || { echo "envtest: no binaries in $BIN; run '$0 build'" >&2; exit 1; }
  command -v etcd >/dev/null || { echo "envtest: etcd not found (apt-get install etcd-server)" >&2; exit 1; }
  certs
  cd "$RUN" && mkdir -p etcd logs
  etcd --name envtest --data-dir "$RUN/etcd" \
      --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster "envtest=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync \
      > logs/etcd.log 2>&1 &
  echo $! > etcd.pid
  start_apiserver
  [ "$KCM" = 0 ] || start_kcm
  echo "export KUBECONFIG=$RUN/admin.kubeconfig"
}

start_apiserver() {
  cd "$RUN"
  "$BIN/kube-apiserver" \
      --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
      --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" --insecure-port 0 \
      --tls-cert-file "$RUN/apiserver.crt" --tls-private-key-file "$RUN/apiserver.key" \
      --client-ca-file "$RUN/ca.crt" --token-auth-file "$RUN/tokens.csv" \
      --authorization-mode RBAC \
      --service-account-issuer https://kubernetes.default.svc.cluster.local \
      --service-account-key-file "$RUN/sa.pub" --service-account-signing-key-file "$RUN/sa.key" \
      --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
      --profiling=false --enable-priority-and-fairness=false --endpoint-reconciler-type=none \
      ${ADMISSION:+--enable-admission-plugins "$ADMISSION"} \
      > logs/kube-apiserver.log 2>&1 &
  echo $! > kube-apiserver.pid
  wait_ready "https://127.0.0.1:$APISERVER_PORT/readyz" 120 kube-apiserver.pid
}

start_kcm() {
  cd "$RUN"
  "$BIN/kube-controller-manager" --kubeconfig "$RUN/kcm.kubeconfig" \
      --authentication-kubeconfig "$RUN/kcm.kubeconfig" --authorization-kubeconfig "$RUN/kcm.kubeconfig" \
      --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --port 0 --leader-elect=false \
      --service-account-private-key-file "$RUN/sa.key" --root-ca-file "$RUN/ca.crt" \
      --controllers "$KCM_CONTROLLERS" \
      > logs/kube-controller-manager.log 2>&1 &
  echo $! > kube-controller-manager.pid
}

sa_kubeconfig() {  # NS SA -> $RUN/sa-NS-SA.kubeconfig (the SA's token Secret; needs the KCM's token controller)
  export KUBECONFIG=$RUN/admin.kubeconfig
  local sec="" tok i
  for i in $(seq 60); do
    sec=$(kubectl -n "$1" get sa "$2" -o jsonpath='{.secrets[0].name}' 2>/dev/null) && [ -n "$sec" ] && break
    sleep 0.5
  done
  [ -n "$sec" ] || { echo "envtest: no token Secret for $1/$2" >&2; return 1; }
  tok=$(kubectl -n "$1" get secret "$sec" -o jsonpath='{.data.token}' | base64 -d)
  kubeconfig "sa-$1-$2.kubeconfig" "$2" "$tok" "$1"
  echo "$RUN/sa-$1-$2.kubeconfig"
}

stop_one() {
  local f=$RUN/$1.pid pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

stop() { stop_one kube-controller-manager; stop_one kube-apiserver; stop_one etcd; }

case "${1:-}" in
  build) build ;;
  bin-dir) built && echo "$BIN" ;;
  start) start ;;
  stop) stop ;;
  restart-apiserver) stop_one kube-apiserver; start_apiserver ;;
  restart-kcm) stop_one kube-controller-manager; start_kcm ;;
  sa-kubeconfig) sa_kubeconfig "$2" "$3" ;;
  env) echo "export KUBECONFIG=$RUN/admin.kubeconfig" ;;
  *) echo "usage: $0 build|bin-dir|start|stop|env|sa-kubeconfig NS SA|restart-apiserver|restart-kcm" >&2; exit 2 ;;
esac
