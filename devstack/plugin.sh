#!/bin/bash
#
# DevStack plugin for glance-xen-import: installs the package into the
# Python environment glance-api runs from and wires it into Glance's
# configuration. Everything happens in "post-config", after configure_glance
# wrote Glance's files and before start_glance, so no restart is needed.

_XTRACE_GXI=$(set +o | grep xtrace)
set -o xtrace

XEN_OVA_PLUGIN=xen_ova
XEN_OVA_FILTER=xen_ova
XEN_OVA_FILTER_FACTORY=glance_xen_import.middleware:filter_factory

# list_with ITEM LIST [BEFORE]
# Print the oslo.config list LIST ("[a, 'b']", or empty) with ITEM added
# once: in front of BEFORE when LIST holds BEFORE, else at the end. Items
# already there keep their order.
function list_with {
    local item=$1 list=$2 before=${3:-} entry
    local -a entries out
    list=${list#*[}
    list=${list%]*}
    IFS=',' read -ra entries <<< "$list"
    for entry in "${entries[@]}"; do
        entry=$(echo "$entry" | tr -d " '\"")
        [[ -z "$entry" || "$entry" == "$item" ]] && continue
        if [[ -n "$before" && "$entry" == "$before" ]]; then
            out+=("$item")
            before=""
            item=""
        fi
        out+=("$entry")
    done
    [[ -n "$item" ]] && out+=("$item")
    local IFS=,
    echo "[${out[*]}]"
}

function install_glance_xen_import {
    # With GLOBAL_VENV (the default) this is the venv glance-api runs from.
    setup_develop $GLANCE_XEN_IMPORT_DIR
}

function configure_glance_xen_import_plugin {
    local plugins
    plugins=$(iniget $GLANCE_IMAGE_IMPORT_CONF image_import_opts image_import_plugins)
    # Our plugin must run before image_conversion, which cannot read VHDs;
    # after ours the image is already RAW.
    plugins=$(list_with $XEN_OVA_PLUGIN "$plugins" image_conversion)
    iniset $GLANCE_IMAGE_IMPORT_CONF image_import_opts image_import_plugins "$plugins"

    local option variable
    for option in manifest_policy max_virtual_size default_disk_bus \
                  default_scsi_model windows_fixup extra_disks \
                  progress_interval; do
        variable=GLANCE_XEN_IMPORT_${option^^}
        if [[ -n "${!variable}" ]]; then
            iniset $GLANCE_IMAGE_IMPORT_CONF xen_ova $option "${!variable}"
        fi
    done
}

function configure_glance_xen_import_methods {
    # Unset means Glance's default, which has both methods.
    local methods
    methods=$(iniget $GLANCE_API_CONF DEFAULT enabled_import_methods)
    [[ -z "$methods" ]] && return
    methods=$(list_with glance-direct "$methods")
    methods=$(list_with web-download "$methods")
    iniset $GLANCE_API_CONF DEFAULT enabled_import_methods "$methods"
}

# pipeline_with_filter PIPELINE
# Print PIPELINE (a space-separated paste pipeline) with the xen_ova filter
# right after the context filter (authenticated or not), as the admin
# guide says; in front of rootapp when there is no context filter; and
# unchanged when the filter is already there or there is no rootapp.
function pipeline_with_filter {
    local -a filters out
    local name placed=False
    read -ra filters <<< "$1"
    if [[ " ${filters[*]} " == *" $XEN_OVA_FILTER "* || " ${filters[*]} " != *" rootapp "* ]]; then
        echo "${filters[*]}"
        return
    fi
    for name in "${filters[@]}"; do
        if [[ $name == rootapp && $placed == False ]]; then
            out+=("$XEN_OVA_FILTER")
            placed=True
        fi
        out+=("$name")
        if [[ ($name == context || $name == unauthenticated-context) && $placed == False ]]; then
            out+=("$XEN_OVA_FILTER")
            placed=True
        fi
    done
    echo "${out[*]}"
}

function configure_glance_xen_import_paste {
    local paste=$GLANCE_API_PASTE_INI key section pipeline
    iniset $paste filter:$XEN_OVA_FILTER paste.filter_factory $XEN_OVA_FILTER_FACTORY
    # Glance 33 and later: one [composite:api] whose options, keyed by
    # [paste_deploy] flavor, are the pipelines.
    if grep -q '^\[composite:api\]' $paste; then
        for key in $(sed -ne '/^\[composite:api\]/,/^\[.*\]/ s/^\([^#[ \t][^= \t]*\)[ \t]*=.*/\1/p' $paste); do
            [[ $key == paste.composite_factory ]] && continue
            pipeline=$(iniget $paste composite:api $key)
            iniset $paste composite:api $key "$(pipeline_with_filter "$pipeline")"
        done
    fi
    # Earlier releases: one [pipeline:glance-api*] section per flavor.
    for section in $(grep -o '^\[pipeline:glance-api[^]]*\]' $paste | tr -d '[]'); do
        pipeline=$(iniget $paste $section pipeline)
        iniset $paste $section pipeline "$(pipeline_with_filter "$pipeline")"
    done
}

function configure_glance_xen_import {
    configure_glance_xen_import_plugin
    configure_glance_xen_import_methods
    if [[ "$GLANCE_XEN_IMPORT_PASTE_FILTER" == "True" ]]; then
        configure_glance_xen_import_paste
    fi
}

if is_service_enabled glance-xen-import; then
    if [[ "$1" == "stack" && "$2" == "pre-install" ]]; then
        if ! is_service_enabled g-api; then
            die $LINENO "glance-xen-import needs glance-api (g-api) enabled"
        fi
    elif [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing glance-xen-import"
        install_glance_xen_import
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring Glance for glance-xen-import"
        configure_glance_xen_import
    fi
    # unstack/clean: nothing of ours outlives Glance's own files.
fi

$_XTRACE_GXI
