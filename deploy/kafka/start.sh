#!/bin/sh
# Starts the Kafka broker of docker-compose.yml (run by the apache/kafka image as its
# command; POSIX sh, so any image with a shell will do).
#
# 1. Every KAFKA_<NAME> variable becomes a line of server.properties: the name lower-cased,
#    "_" -> ".", "__" -> "_", "___" -> "-" (KAFKA_SSL_KEYSTORE_TYPE -> ssl.keystore.type).
#    The JVM's own variables (KAFKA_OPTS, KAFKA_HEAP_OPTS, ...) are left to Kafka's scripts.
# 2. The secrets mounted under /run/secrets are added: the keystore password and the
#    admin principal's JAAS logins (inter-broker SCRAM, the controller's PLAIN on loopback).
#    They never appear in the compose file or the environment.
# 3. On the first start the storage is formatted with the admin's SCRAM credential (the
#    broker logs in to itself with it, and the set-up step creates everything else).
# 4. Kafka runs in place of this script.
#
# Also written: admin.properties, the admin's client settings, for the health check.
set -eu

secrets=${KAFKA_SECRETS_DIR:-/run/secrets}
conf_dir=${KAFKA_CONFIG_DIR:-/tmp/kafka-config}
kafka_home=${KAFKA_HOME:-/opt/kafka}

read_secret() {
    if [ ! -s "$secrets/$1" ]; then
        echo "error: secret $secrets/$1 is missing or empty: run the set-up step" \
             "(docker compose --profile setup run --rm kafka-secrets)" >&2
        exit 2
    fi
    # A trailing newline is not part of the secret ($(...) drops it).
    cat "$secrets/$1"
}

: "${CLUSTER_ID:?set CLUSTER_ID (the KRaft cluster id)}"
admin_password=$(read_secret kafka_admin_password)
keystore_password=$(read_secret kafka_keystore_password)

umask 077
mkdir -p "$conf_dir"
conf=$conf_dir/server.properties
: > "$conf"

env | sort | while IFS='=' read -r name value; do
    case $name in
        KAFKA_OPTS | KAFKA_HEAP_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_GC_LOG_OPTS | \
        KAFKA_LOG4J_OPTS | KAFKA_JMX_OPTS | KAFKA_DEBUG | KAFKA_HOME | KAFKA_SECRETS_DIR | \
        KAFKA_CONFIG_DIR) continue ;;
        KAFKA_*) ;;
        *) continue ;;
    esac
    key=$(printf '%s' "${name#KAFKA_}" | tr 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' 'abcdefghijklmnopqrstuvwxyz' |
        sed -e 's/___/-/g' -e 's/__/%/g' -e 's/_/./g' -e 's/%/_/g')
    printf '%s=%s\n' "$key" "$value" >> "$conf"
done

scram=org.apache.kafka.common.security.scram.ScramLoginModule
plain=org.apache.kafka.common.security.plain.PlainLoginModule
cat >> "$conf" <<PROPERTIES
ssl.keystore.password=$keystore_password
ssl.key.password=$keystore_password
listener.name.internal.scram-sha-512.sasl.jaas.config=$scram required username="admin" password="$admin_password";
listener.name.external.scram-sha-512.sasl.jaas.config=$scram required;
listener.name.controller.plain.sasl.jaas.config=$plain required username="admin" password="$admin_password" user_admin="$admin_password";
PROPERTIES

cat > "$conf_dir/admin.properties" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$scram required username="admin" password="$admin_password";
ssl.truststore.type=PEM
ssl.truststore.location=$secrets/kafka_ca
PROPERTIES

"$kafka_home/bin/kafka-storage.sh" format --cluster-id "$CLUSTER_ID" --config "$conf" \
    --ignore-formatted --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_password]"

exec "$kafka_home/bin/kafka-server-start.sh" "$conf"
