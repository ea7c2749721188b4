#!/bin/bash
# Import a XenServer-style OVA built from DevStack's cirros image through
# the xen-ova import method and check what Glance made of it.
#
#   check-xen-ova-import.sh REPO_DIR DEVSTACK_FILES_DIR WORK_DIR
#
# Needs credentials for the glance and openstack clients in the
# environment (DevStack's openrc), or OS_IMAGE_URL and OS_AUTH_TOKEN;
# qemu-img, curl and python3. Exits non-zero on the first failed check.

set -euo pipefail

REPO=$1
FILES=$2
WORK=$3
TIMEOUT=${XEN_OVA_CHECK_TIMEOUT:-600}

mkdir -p "$WORK"
cd "$WORK"

fail() {
    echo "FAILED: $*" >&2
    exit 1
}

# field IMAGE_ID NAME: an attribute or property from glance image-show.
field() {
    glance image-show "$1" |
        awk -F'|' -v name="$2" '{ key = $2; gsub(/^ +| +$/, "", key) }
            key == name { value = $3; gsub(/^ +| +$/, "", value); print value }'
}

# The image's import tasks, one "status: message" a line.
# GET /v2/images/{id}/tasks: "glance image-tasks" needs the server to
# advertise API 2.12, which a single-store Glance does not.
IMAGE_URL=${OS_IMAGE_URL:-$(openstack endpoint list --service image --interface public -f value -c URL | head -n 1)}
TOKEN=${OS_AUTH_TOKEN:-$(openstack token issue -f value -c id)}
tasks() {
    curl -sf -H "X-Auth-Token: $TOKEN" "${IMAGE_URL%/}/v2/images/$1/tasks" |
        python3 -c 'import json, sys
for task in json.load(sys.stdin)["tasks"]:
    print("%s: %s" % (task["status"], task.get("message") or ""))'
}

# wait_for IMAGE_ID: until the import task is over; prints the final status.
wait_for() {
    local id=$1 waited=0 status
    while true; do
        status=$(field "$id" status)
        case $status in
            active|queued|killed|deleted) echo "$status"; return ;;
        esac
        [[ $waited -ge $TIMEOUT ]] && fail "image $id still $status after ${TIMEOUT}s"
        sleep 5
        waited=$((waited + 5))
    done
}

# 1. The disk: DevStack's cirros image, as a dynamic VHD whose footer looks
#    like XenServer's exports (creator "caml"): qemu-img sizes such a VHD by
#    its CHS geometry, our converter by its footer's current size.
cirros=$(ls "$FILES"/cirros-*-disk.img 2>/dev/null | head -n 1 || true)
[[ -n "$cirros" ]] || fail "no cirros image in $FILES"
qemu-img convert -f qcow2 -O raw "$cirros" expected.raw
qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on expected.raw cirros.vhd
virtual_size=$(stat -c %s expected.raw)

python3 - "$REPO" <<'PYTHON'
import sys
sys.path.insert(0, sys.argv[1])
from tests import ovakit  # standard library only

ovakit.set_creator('cirros.vhd', 'caml')
disk = ovakit.OvaDisk('cirros.vhd', href='cirros-disk0.vhd')
ovakit.make_ova('cirros.ova', [disk], name='cirros-xen')
# The same package with a manifest that does not match the descriptor.
ovakit.make_ova('tampered.ova', [disk], name='tampered',
                manifest_entries=[('tampered.ovf', '0' * 64)])
PYTHON

# 2. The cloud offers the method.
glance import-info | tee import-info.txt
grep -q 'xen-ova' import-info.txt || fail "xen-ova is not in glance import-info"

# 3. A good OVA becomes an active RAW image with our properties.
glance image-create-via-import --import-method xen-ova \
    --container-format ova --disk-format vhd \
    --name xen-ova-check --file cirros.ova | tee create.txt
id=$(awk '$2 == "id" {print $4}' create.txt)
[[ -n "$id" ]] || fail "no image id in the create output"
status=$(wait_for "$id")
glance image-show "$id"
tasks "$id" || true
[[ $status == active ]] || fail "image $id is $status, not active"
[[ $(field "$id" disk_format) == raw ]] || fail "disk_format is not raw"
[[ $(field "$id" container_format) == bare ]] || fail "container_format is not bare"
[[ $(field "$id" virtual_size) == "$virtual_size" ]] || fail "virtual_size is not $virtual_size"
[[ $(field "$id" xen_import_source) == vhd-dynamic:caml ]] || fail "xen_import_source is not vhd-dynamic:caml"
for property in hw_disk_bus hw_firmware_type xen_import_fixup_required; do
    [[ -n $(field "$id" $property) ]] || fail "property $property is missing"
done

# 4. The stored bytes are cirros' own, byte for byte.
glance image-download --file downloaded.raw "$id"
cmp downloaded.raw expected.raw || fail "the stored image differs from cirros"
glance image-delete "$id"

# 5. A tampered OVA is refused: the image goes back to queued and the task
#    says why.
glance image-create-via-import --import-method xen-ova \
    --container-format ova --disk-format vhd \
    --name xen-ova-tampered --file tampered.ova | tee tampered.txt
id=$(awk '$2 == "id" {print $4}' tampered.txt)
status=$(wait_for "$id")
tasks "$id" | tee tasks.txt
[[ $status == queued ]] || fail "tampered image $id is $status, not queued"
grep -q 'xen-ova: .*manifest' tasks.txt || fail "the task message does not name the manifest"
glance image-delete "$id"

echo "xen-ova import checks passed"
