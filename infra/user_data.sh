#!/bin/bash
# Boot script of a spot training instance (rendered by infra/user_data.py). Safe to re-run: every step checks
# what is already done. It (1) writes the job's environment, (2) mounts fast local storage at the data dir,
# (3) joins the bucket's active run, if any, through `python3 -m job.bootstrap`.
set -euo pipefail
exec > >(tee -a @@LOG_PATH@@) 2>&1
echo "spot-resnet user data: $(date -u +%FT%TZ)"

BUCKET="@@BUCKET@@"
REGION="@@REGION@@"
DATA_DIR="@@DATA_DIR@@"
ACTIVE_RUN_KEY="@@ACTIVE_RUN_KEY@@"
export AWS_DEFAULT_REGION="$REGION"

# 1. The same variables the local drill sets through sshd SetEnv (docs/CONTRACTS.md).
cat > /etc/profile.d/spot-resnet.sh <<PROFILE
export SPOT_BUCKET=$BUCKET
export SPOT_DATA_DIR=$DATA_DIR
export AWS_DEFAULT_REGION=$REGION
PROFILE
chmod 0644 /etc/profile.d/spot-resnet.sh

# 2. Data dir: NVMe instance store (RAID-0 when there are several devices), else the EBS data volume.
mount_data() {
  if mountpoint -q "$DATA_DIR"; then echo "$DATA_DIR already mounted"; return; fi
  mkdir -p "$DATA_DIR"
  local device="" stores=() ebs=()
  for dev in /dev/nvme*n1; do
    [ -b "$dev" ] || continue
    model=$(cat "/sys/block/$(basename "$dev")/device/model" 2>/dev/null | sed 's/ *$//')
    case "$model" in
      "Amazon EC2 NVMe Instance Storage") stores+=("$dev") ;;
      # An EBS volume with no partitions and no mount is the data volume (the root volume is partitioned).
      "Amazon Elastic Block Store")
        if [ "$(lsblk -nro NAME "$dev" | wc -l)" = 1 ] && [ -z "$(lsblk -nro MOUNTPOINT "$dev")" ]; then ebs+=("$dev"); fi ;;
    esac
  done
  if [ "${#stores[@]}" -gt 1 ]; then
    device=/dev/md/spot-data
    if [ ! -e "$device" ]; then
      mdadm --assemble --scan || true
    fi
    if [ ! -e "$device" ]; then
      mdadm --create "$device" --name=spot-data --level=0 --raid-devices="${#stores[@]}" --run --force "${stores[@]}"
    fi
  elif [ "${#stores[@]}" -eq 1 ]; then
    device="${stores[0]}"
  elif [ "${#ebs[@]}" -ge 1 ]; then
    device="${ebs[0]}"
  else
    echo "no instance store and no data volume: $DATA_DIR stays on the root volume"
    chown ubuntu:ubuntu "$DATA_DIR"
    return
  fi
  if ! blkid "$device" >/dev/null 2>&1; then
    mkfs.ext4 -q -F -L spot-data -E nodiscard,lazy_itable_init=1 "$device"
  fi
  mount -o noatime "$device" "$DATA_DIR"
  grep -q " $DATA_DIR " /etc/fstab || echo "$device $DATA_DIR ext4 noatime,nofail 0 2" >> /etc/fstab
  chown ubuntu:ubuntu "$DATA_DIR"
  echo "mounted $device at $DATA_DIR"
}
mount_data

# 3. Join the active run: a replacement instance resumes without the laptop.
python3 -c 'import boto3' 2>/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-boto3; }
command -v tmux >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux
if ! aws s3 cp --only-show-errors "s3://$BUCKET/$ACTIVE_RUN_KEY" /tmp/spot-resnet-active.json; then
  echo "no active run in s3://$BUCKET/$ACTIVE_RUN_KEY: waiting for \`launcher train\`"
  exit 0
fi
read -r RUN PACKAGE_KEY < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["run"], d["package_key"])' /tmp/spot-resnet-active.json)
if ! [[ "$RUN" =~ @@RUN_NAME_PATTERN@@ ]]; then echo "active run name '$RUN' is not valid: not starting" >&2; exit 1; fi
as_ubuntu() { sudo -u ubuntu -H env PYTHONPATH="$PKG_DIR" SPOT_BUCKET="$BUCKET" SPOT_DATA_DIR="$DATA_DIR" AWS_DEFAULT_REGION="$REGION" "$@"; }
PKG_DIR="$DATA_DIR/pkg/$RUN"
if [ ! -d "$PKG_DIR/job" ]; then
  # Extract beside the final place and rename, so an interrupted boot never leaves a half package behind.
  as_ubuntu mkdir -p "$DATA_DIR/pkg"
  partial=$(as_ubuntu mktemp -d "$DATA_DIR/pkg/.$RUN.XXXXXX")
  as_ubuntu aws s3 cp --only-show-errors "s3://$BUCKET/$PACKAGE_KEY" "$partial/job.tar.gz"
  as_ubuntu tar -xzf "$partial/job.tar.gz" -C "$partial"
  rm -rf "$PKG_DIR"
  mv "$partial" "$PKG_DIR"
fi
cd "$PKG_DIR"
as_ubuntu python3 -m job.bootstrap --bucket "$BUCKET" --run "$RUN"
echo "spot-resnet user data done: $(date -u +%FT%TZ)"
