#!/bin/sh
# One-shot set-up of MinIO for Arkivflöde (docker-compose.yml's minio-init); safe to rerun.
# - arkiv-work: the working bucket tasks hand each other objects in (not versioned: its objects are
#   working copies, removed once their batch is archived)
# - arkiv-mellanarkiv: versioned, so that an overwrite or delete can be undone
# - arkiv-slutarkiv: Object Lock (which implies versioning); Arkivflöde sets each object's
#   retention itself (ARKIV_SLUTARKIV_OBJECT_LOCK_MODE/_DAYS)
# - a MinIO user for Arkivflöde limited to these three buckets (deploy/minio-arkivflode-policy.json)
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing local/arkiv-work
mc mb --ignore-existing local/arkiv-mellanarkiv
mc version enable local/arkiv-mellanarkiv
mc mb --ignore-existing --with-lock local/arkiv-slutarkiv
# refuse to go on if the slutarkiv bucket exists without Object Lock (it cannot be added later)
mc retention info --default local/arkiv-slutarkiv
mc admin policy create local arkivflode /deploy/minio-arkivflode-policy.json
mc admin user add local "$ARKIV_S3_ACCESS_KEY" "$ARKIV_S3_SECRET_KEY"
mc admin policy attach local arkivflode --user "$ARKIV_S3_ACCESS_KEY" || true  # already attached on a rerun
