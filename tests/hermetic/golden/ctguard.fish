# ctguard: `--guest` takes the guest names `ctguard guests --names` prints.
function __ctguard_guest_names
    set -l words (commandline -opc)
    set -l args
    for i in (seq 2 (count $words))
        switch $words[$i]
            case --guests --netns
                set -a args $words[$i] $words[(math $i + 1)]
            case '--guests=*' '--netns=*'
                set -a args $words[$i]
        end
    end
    for name in ($words[1] guests --names $args 2>/dev/null)
        printf '%s\tguest\n' $name
    end
end

# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ctguard_global_optspecs
    string join \n netns= h/help V/version
end

function __fish_ctguard_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ctguard_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ctguard_using_subcommand
    set -l cmd (__fish_ctguard_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ctguard -n "__fish_ctguard_needs_command" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_needs_command" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_needs_command" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "top" -d 'Who fills the table: fill %, the top owners by entries, per-state columns'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "count" -d 'Count the selected flows, optionally grouped (`--by state` is the procfs awk one-liner)'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "list" -d 'Print the selected flows like `conntrack -L`, or as JSON Lines'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "stats" -d 'Table count, max, fill %, buckets, and the per-CPU counters summed; with --interval, their rise per second, interval after interval'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "create" -d 'Create one flow (`conntrack -I`)'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "load" -d 'Create the flows of a JSON Lines file written by `list --json` (or `-` for stdin)'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "doctor" -d 'Is the table full, who filled it, what to run now (exit 0 healthy, 1 at risk or full)'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "tune" -d 'Recommended conntrack sysctls for this host, each with its reason'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "events" -d 'Print conntrack events like `conntrack -E` (with timestamps), or as JSON Lines'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "watch" -d 'Live counts per group and state from events: a top-like view, or JSON Lines snapshots'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "evict" -d 'Delete exactly the selected flows: preview and confirm, or --yes; --dry-run to see'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "update" -d 'Set mark, timeout, status or labels on the selected flows (`conntrack -U`): preview and confirm, or --yes; --dry-run to see'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "guard" -d 'The always-on guard: live counts per guest, automatic relief, /metrics (see --help)'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "guests" -d 'The guest interfaces found on this host (links, neighbours, bridge FDB): NAME IFACE MAC IPv4 IPv6 SOURCE'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "completions" -d 'Write the completion script of bash, zsh or fish to stdout (guest names included)'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "man" -d 'Write the manual pages (ctguard.8, ctguard-COMMAND.8) into DIR'
complete -c ctguard -n "__fish_ctguard_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l by -d 'Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark, helper (default: guest with --guests, else src)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s n -l limit -d 'How many groups to show' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s s -l src -l orig-src -d 'Original source IP or CIDR (repeatable: any of them)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s d -l dst -l orig-dst -d 'Original destination IP or CIDR (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s r -l reply-src -d 'Reply source IP or CIDR (repeatable; the DNAT target)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s q -l reply-dst -d 'Reply destination IP or CIDR (repeatable; the SNAT address)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l guest -d 'Guest name (from --guests, or found on this host: `ctguard guests`), or a CIDR standing for a guest (repeatable)' -r -f -a '(__ctguard_guest_names)'
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l guests -d 'Guest file (TOML: name = ["CIDR", ...]); it wins over discovery for its addresses' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l libvirt-dir -d 'libvirt\'s live domain XML, which names guests by their interface and MAC' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l pve-dir -d 'Proxmox VE\'s configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and `veth<VMID>i<N>`' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s p -l proto -d 'Protocol name or number (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l sport -l orig-port-src -d 'Original source port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l dport -l orig-port-dst -d 'Original destination port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l state -d 'States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s u -l status -d 'Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s m -l mark -d 'Mark VALUE[/MASK], decimal or 0x-hex' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s w -l zone -d 'Conntrack zone, whichever directions it applies to' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l orig-zone -d 'Zone of the original direction (the entry\'s zone, or its original-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l reply-zone -d 'Zone of the reply direction (the entry\'s zone, or its reply-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l mask-src -d 'Mask for the one -s address, instead of a /prefix (255.255.255.0; contiguous)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l mask-dst -d 'Mask for the one -d address, instead of a /prefix' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s f -l family -d 'Address family: ipv4 or ipv6' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l idle -d 'Idle at least this long (state timeout minus remaining; e.g. 10m, 1h)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l timeout-below -d 'Less than this long left before the entry expires' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l except -d 'Never select flows with an address in CIDR (repeatable; any of their four addresses)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s l -l label -d 'Connection labels the flow must all have: names from the label map or bit numbers, comma separated (repeatable; like conntrack -l)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l labelmap -d 'The label names (default /etc/xtables/connlabel.conf, as conntrack reads it)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l src-nat -d 'Source-NATed flows (`conntrack -n`): any, or NATed to IP[:PORT] ([IPv6]:PORT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l dst-nat -d 'Destination-NATed flows (`conntrack -g`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l any-nat -d 'Source- or destination-NATed flows (`conntrack -j`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l socket -d 'The guard\'s query socket (with --live)' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l json -d 'Print JSON'
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l no-discover -d 'Name guests from the --guests file only: no look at the host\'s interfaces, neighbour tables and hypervisor records'
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -l live -d 'Ask the running guard (`ctguard guard`) instead of dumping the table: milliseconds, no dump. By guest or by state only (non-TCP flows are one NON_TCP group); filters: --guest NAME, --state (TCP flows in those states). The guard\'s guest names are used (--guests is not read)'
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand top" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l by -d 'Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark, helper' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s s -l src -l orig-src -d 'Original source IP or CIDR (repeatable: any of them)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s d -l dst -l orig-dst -d 'Original destination IP or CIDR (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s r -l reply-src -d 'Reply source IP or CIDR (repeatable; the DNAT target)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s q -l reply-dst -d 'Reply destination IP or CIDR (repeatable; the SNAT address)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l guest -d 'Guest name (from --guests, or found on this host: `ctguard guests`), or a CIDR standing for a guest (repeatable)' -r -f -a '(__ctguard_guest_names)'
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l guests -d 'Guest file (TOML: name = ["CIDR", ...]); it wins over discovery for its addresses' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l libvirt-dir -d 'libvirt\'s live domain XML, which names guests by their interface and MAC' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l pve-dir -d 'Proxmox VE\'s configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and `veth<VMID>i<N>`' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s p -l proto -d 'Protocol name or number (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l sport -l orig-port-src -d 'Original source port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l dport -l orig-port-dst -d 'Original destination port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l state -d 'States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s u -l status -d 'Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s m -l mark -d 'Mark VALUE[/MASK], decimal or 0x-hex' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s w -l zone -d 'Conntrack zone, whichever directions it applies to' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l orig-zone -d 'Zone of the original direction (the entry\'s zone, or its original-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l reply-zone -d 'Zone of the reply direction (the entry\'s zone, or its reply-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l mask-src -d 'Mask for the one -s address, instead of a /prefix (255.255.255.0; contiguous)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l mask-dst -d 'Mask for the one -d address, instead of a /prefix' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s f -l family -d 'Address family: ipv4 or ipv6' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l idle -d 'Idle at least this long (state timeout minus remaining; e.g. 10m, 1h)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l timeout-below -d 'Less than this long left before the entry expires' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l except -d 'Never select flows with an address in CIDR (repeatable; any of their four addresses)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s l -l label -d 'Connection labels the flow must all have: names from the label map or bit numbers, comma separated (repeatable; like conntrack -l)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l labelmap -d 'The label names (default /etc/xtables/connlabel.conf, as conntrack reads it)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l src-nat -d 'Source-NATed flows (`conntrack -n`): any, or NATed to IP[:PORT] ([IPv6]:PORT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l dst-nat -d 'Destination-NATed flows (`conntrack -g`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l any-nat -d 'Source- or destination-NATed flows (`conntrack -j`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l socket -d 'The guard\'s query socket (with --live)' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l expect -d 'Count the expectation table instead of the flows (`conntrack -C expect`); --by src, dst, src/N, dst/N, proto of the expected tuple, or helper'
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l json -d 'Print JSON'
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l no-discover -d 'Name guests from the --guests file only: no look at the host\'s interfaces, neighbour tables and hypervisor records'
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -l live -d 'Ask the running guard (`ctguard guard`) instead of dumping the table: milliseconds, no dump. By guest or by state only (non-TCP flows are one NON_TCP group); filters: --guest NAME, --state (TCP flows in those states). The guard\'s guest names are used (--guests is not read)'
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand count" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s o -l output -d '`labels`: print the connection labels the label map names (conntrack -L -o labels; printed with --label too, as conntrack does)' -r -f -a "labels\t''"
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s s -l src -l orig-src -d 'Original source IP or CIDR (repeatable: any of them)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s d -l dst -l orig-dst -d 'Original destination IP or CIDR (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s r -l reply-src -d 'Reply source IP or CIDR (repeatable; the DNAT target)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s q -l reply-dst -d 'Reply destination IP or CIDR (repeatable; the SNAT address)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l guest -d 'Guest name (from --guests, or found on this host: `ctguard guests`), or a CIDR standing for a guest (repeatable)' -r -f -a '(__ctguard_guest_names)'
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l guests -d 'Guest file (TOML: name = ["CIDR", ...]); it wins over discovery for its addresses' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l libvirt-dir -d 'libvirt\'s live domain XML, which names guests by their interface and MAC' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l pve-dir -d 'Proxmox VE\'s configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and `veth<VMID>i<N>`' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s p -l proto -d 'Protocol name or number (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l sport -l orig-port-src -d 'Original source port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l dport -l orig-port-dst -d 'Original destination port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l state -d 'States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s u -l status -d 'Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s m -l mark -d 'Mark VALUE[/MASK], decimal or 0x-hex' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s w -l zone -d 'Conntrack zone, whichever directions it applies to' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l orig-zone -d 'Zone of the original direction (the entry\'s zone, or its original-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l reply-zone -d 'Zone of the reply direction (the entry\'s zone, or its reply-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l mask-src -d 'Mask for the one -s address, instead of a /prefix (255.255.255.0; contiguous)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l mask-dst -d 'Mask for the one -d address, instead of a /prefix' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s f -l family -d 'Address family: ipv4 or ipv6' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l idle -d 'Idle at least this long (state timeout minus remaining; e.g. 10m, 1h)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l timeout-below -d 'Less than this long left before the entry expires' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l except -d 'Never select flows with an address in CIDR (repeatable; any of their four addresses)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s l -l label -d 'Connection labels the flow must all have: names from the label map or bit numbers, comma separated (repeatable; like conntrack -l)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l labelmap -d 'The label names (default /etc/xtables/connlabel.conf, as conntrack reads it)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l src-nat -d 'Source-NATed flows (`conntrack -n`): any, or NATed to IP[:PORT] ([IPv6]:PORT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l dst-nat -d 'Destination-NATed flows (`conntrack -g`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l any-nat -d 'Source- or destination-NATed flows (`conntrack -j`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l expect -d 'The expectation table instead of the flows (`conntrack -L expect`); selects by -s, -d, -p, --sport, --dport, -f of the expected tuple'
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l no-discover -d 'Name guests from the --guests file only: no look at the host\'s interfaces, neighbour tables and hypervisor records'
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -l json -d 'Print JSON Lines, one flow per line (schema in docs/json-schema.md)'
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand list" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand stats" -l interval -d 'Every DURATION (1s, 500ms; 100ms to 1h), print the count, fill % and every counter\'s rise per second over the interval, until Ctrl-C or --count' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand stats" -l count -d 'Stop after N intervals' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand stats" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand stats" -l json -d 'Print JSON (with --interval, one JSON Lines object per interval)'
complete -c ctguard -n "__fish_ctguard_using_subcommand stats" -l per-cpu -d 'Also show each CPU\'s counters'
complete -c ctguard -n "__fish_ctguard_using_subcommand stats" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand stats" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s p -l proto -d 'Protocol name or number' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s s -l src -l orig-src -d 'Original source address' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s d -l dst -l orig-dst -d 'Original destination address' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l sport -l orig-port-src -d 'Original source port' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l dport -l orig-port-dst -d 'Original destination port' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s r -l reply-src -d 'Reply source address (default: the original destination; differs for DNAT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s q -l reply-dst -d 'Reply destination address (default: the original source; differs for SNAT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l reply-sport -l reply-port-src -d 'Reply source port (default: the original destination port)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l reply-dport -l reply-port-dst -d 'Reply destination port (default: the original source port)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s n -l src-nat -d 'Source NAT to IP[:PORT] ([IPv6]:PORT), like `conntrack -I --src-nat`; needs the kernel\'s NAT (nf_nat). Without a port the reply\'s destination port (--reply-dport, as `conntrack -L -o save` writes it; else the original source port) is kept' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s g -l dst-nat -d 'Destination NAT to IP[:PORT], like `conntrack -I --dst-nat`. Without a port the reply\'s source port (--reply-sport; else the original destination port) is kept' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l icmp-type -d 'ICMP type (ICMP/ICMPv6)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l icmp-code -d 'ICMP code' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l icmp-id -d 'ICMP identifier' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l state -d 'TCP/SCTP/DCCP state' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s t -l timeout -d 'Timeout (seconds, or a duration like 1h)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s u -l status -d 'Status bits to set, comma separated (ASSURED,SEEN_REPLY)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s m -l mark -d 'Mark' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s w -l zone -d 'Zone, for both directions (`CTA_ZONE`)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l orig-zone -d 'Zone of the original direction only (`CTA_TUPLE_ZONE` in the original tuple)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l reply-zone -d 'Zone of the reply direction only (`CTA_TUPLE_ZONE` in the reply tuple)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s l -l label -d 'Connection labels: names from the label map or bit numbers, comma separated (repeatable). The kernel keeps them only while a label user (an nft `ct label` rule) exists in the namespace' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l labelmap -d 'The label names (default /etc/xtables/connlabel.conf)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand create" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand load" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand load" -l batch -d 'FILE holds `conntrack -R` lines instead: `-I`/`-A` with conntrack\'s flags, one flow a line (`conntrack -L -o save` writes them); -D lines go to `evict --batch`'
complete -c ctguard -n "__fish_ctguard_using_subcommand load" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand load" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -l window -d 'How long to watch the per-CPU counters (a rising `drop` means full now)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -l guests -d 'Guest file: name the offenders by guest instead of by source address (it wins over discovery for its addresses)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -l libvirt-dir -d 'libvirt\'s live domain XML, which names guests by their interface and MAC' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -l pve-dir -d 'Proxmox VE\'s configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and `veth<VMID>i<N>`' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -s n -l limit -d 'How many top owners to show' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -l no-discover -d 'Name guests from the --guests file only: no look at the host\'s interfaces, neighbour tables and hypervisor records'
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -l json -d 'Print JSON (schema in docs/json-schema.md)'
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand tune" -l persist -d 'Write the recommendations to this sysctl.d file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand tune" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand tune" -l apply -d 'Write the values to /proc/sys in the target namespace where writable'
complete -c ctguard -n "__fish_ctguard_using_subcommand tune" -l json -d 'Print JSON (schema in docs/json-schema.md)'
complete -c ctguard -n "__fish_ctguard_using_subcommand tune" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand tune" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s e -l event -d 'Event kinds, comma separated: new, update, destroy (default: all three). Only these groups are subscribed' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l buffer -d 'Kernel receive buffer for events (SO_RCVBUFFORCE): bytes or 256K, 64M, 1G. The kernel doubles it and charges ~1.3 KiB per waiting event: 64M holds ~100,000 events' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l count -d 'Stop after N events (events) or N snapshots (watch)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l duration -d 'Stop after this long (30s, 5m); watch prints a last snapshot' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s s -l src -l orig-src -d 'Original source IP or CIDR (repeatable: any of them)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s d -l dst -l orig-dst -d 'Original destination IP or CIDR (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s r -l reply-src -d 'Reply source IP or CIDR (repeatable; the DNAT target)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s q -l reply-dst -d 'Reply destination IP or CIDR (repeatable; the SNAT address)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l guest -d 'Guest name (from --guests, or found on this host: `ctguard guests`), or a CIDR standing for a guest (repeatable)' -r -f -a '(__ctguard_guest_names)'
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l guests -d 'Guest file (TOML: name = ["CIDR", ...]); it wins over discovery for its addresses' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l libvirt-dir -d 'libvirt\'s live domain XML, which names guests by their interface and MAC' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l pve-dir -d 'Proxmox VE\'s configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and `veth<VMID>i<N>`' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s p -l proto -d 'Protocol name or number (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l sport -l orig-port-src -d 'Original source port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l dport -l orig-port-dst -d 'Original destination port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l state -d 'States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s u -l status -d 'Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s m -l mark -d 'Mark VALUE[/MASK], decimal or 0x-hex' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s w -l zone -d 'Conntrack zone, whichever directions it applies to' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l orig-zone -d 'Zone of the original direction (the entry\'s zone, or its original-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l reply-zone -d 'Zone of the reply direction (the entry\'s zone, or its reply-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l mask-src -d 'Mask for the one -s address, instead of a /prefix (255.255.255.0; contiguous)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l mask-dst -d 'Mask for the one -d address, instead of a /prefix' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s f -l family -d 'Address family: ipv4 or ipv6' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l idle -d 'Idle at least this long (state timeout minus remaining; e.g. 10m, 1h)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l timeout-below -d 'Less than this long left before the entry expires' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l except -d 'Never select flows with an address in CIDR (repeatable; any of their four addresses)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s l -l label -d 'Connection labels the flow must all have: names from the label map or bit numbers, comma separated (repeatable; like conntrack -l)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l labelmap -d 'The label names (default /etc/xtables/connlabel.conf, as conntrack reads it)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l src-nat -d 'Source-NATed flows (`conntrack -n`): any, or NATed to IP[:PORT] ([IPv6]:PORT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l dst-nat -d 'Destination-NATed flows (`conntrack -g`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l any-nat -d 'Source- or destination-NATed flows (`conntrack -j`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l json -d 'Print JSON Lines: {"type":"new","time":...,"flow":{...}} (with "portid" and "progname" for an event a process\'s request caused), and {"type":"lost"} records'
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l enable-events -d 'Set nf_conntrack_events=1 first, in the target network namespace only (the sysctl is per namespace), so that every new flow reports events'
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -l no-discover -d 'Name guests from the --guests file only: no look at the host\'s interfaces, neighbour tables and hypervisor records'
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand events" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l by -d 'Group by: guest, src, dst, src/N, dst/N, state, proto, zone, mark, helper (default: guest with --guests, else src)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l interval -d 'Time between snapshots' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l reconcile -d 'Re-dump and correct the counts this often; `off` disables. Default: 30s when nf_conntrack_events is not 1 (flows may be silent), else 5m (a safety net)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s n -l limit -d 'Groups per JSON snapshot (default: all; the terminal view scrolls)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l audit-log -d 'The audit log of what `e` evicts (one JSON line per run, before and after); \'\' turns auditing off, like --no-audit' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l save-dir -d 'Where what `e` evicts is saved, one file per eviction under DIR/spool/ (`ctguard load FILE` puts them back)' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l cap -d 'The new connections a cap (`c`) lets each of the group\'s networks open' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l buffer -d 'Kernel receive buffer for events (SO_RCVBUFFORCE): bytes or 256K, 64M, 1G. The kernel doubles it and charges ~1.3 KiB per waiting event: 64M holds ~100,000 events' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l count -d 'Stop after N events (events) or N snapshots (watch)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l duration -d 'Stop after this long (30s, 5m); watch prints a last snapshot' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s s -l src -l orig-src -d 'Original source IP or CIDR (repeatable: any of them)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s d -l dst -l orig-dst -d 'Original destination IP or CIDR (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s r -l reply-src -d 'Reply source IP or CIDR (repeatable; the DNAT target)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s q -l reply-dst -d 'Reply destination IP or CIDR (repeatable; the SNAT address)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l guest -d 'Guest name (from --guests, or found on this host: `ctguard guests`), or a CIDR standing for a guest (repeatable)' -r -f -a '(__ctguard_guest_names)'
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l guests -d 'Guest file (TOML: name = ["CIDR", ...]); it wins over discovery for its addresses' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l libvirt-dir -d 'libvirt\'s live domain XML, which names guests by their interface and MAC' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l pve-dir -d 'Proxmox VE\'s configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and `veth<VMID>i<N>`' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s p -l proto -d 'Protocol name or number (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l sport -l orig-port-src -d 'Original source port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l dport -l orig-port-dst -d 'Original destination port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l state -d 'States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s u -l status -d 'Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s m -l mark -d 'Mark VALUE[/MASK], decimal or 0x-hex' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s w -l zone -d 'Conntrack zone, whichever directions it applies to' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l orig-zone -d 'Zone of the original direction (the entry\'s zone, or its original-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l reply-zone -d 'Zone of the reply direction (the entry\'s zone, or its reply-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l mask-src -d 'Mask for the one -s address, instead of a /prefix (255.255.255.0; contiguous)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l mask-dst -d 'Mask for the one -d address, instead of a /prefix' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s f -l family -d 'Address family: ipv4 or ipv6' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l idle -d 'Idle at least this long (state timeout minus remaining; e.g. 10m, 1h)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l timeout-below -d 'Less than this long left before the entry expires' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l except -d 'Never select flows with an address in CIDR (repeatable; any of their four addresses)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s l -l label -d 'Connection labels the flow must all have: names from the label map or bit numbers, comma separated (repeatable; like conntrack -l)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l labelmap -d 'The label names (default /etc/xtables/connlabel.conf, as conntrack reads it)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l src-nat -d 'Source-NATed flows (`conntrack -n`): any, or NATed to IP[:PORT] ([IPv6]:PORT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l dst-nat -d 'Destination-NATed flows (`conntrack -g`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l any-nat -d 'Source- or destination-NATed flows (`conntrack -j`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l json -d 'Print JSON Lines (the default when stdout is not a terminal)'
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l no-audit -d 'Write no audit records'
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l enable-events -d 'Set nf_conntrack_events=1 first, in the target network namespace only (the sysctl is per namespace), so that every new flow reports events'
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -l no-discover -d 'Name guests from the --guests file only: no look at the host\'s interfaces, neighbour tables and hypervisor records'
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand watch" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l limit -d 'Delete at most N flows, the most idle first' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l save -d 'Write the flows about to be deleted to FILE first (JSON Lines, as `list --json`; `ctguard load FILE` puts them back)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l batch -d 'Delete by the `-D` lines of a `conntrack -R` file (`-` for stdin) instead of flags: one eviction per line, in order, each as if its flags were given here' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l rate -d 'Act on at most N flows a second (N or N/s)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l audit-log -d 'Append the audit records (intent before the first change, outcome after) to this file; if it cannot be written, nothing is changed. \'\' turns auditing off, like --no-audit' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s s -l src -l orig-src -d 'Original source IP or CIDR (repeatable: any of them)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s d -l dst -l orig-dst -d 'Original destination IP or CIDR (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s r -l reply-src -d 'Reply source IP or CIDR (repeatable; the DNAT target)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s q -l reply-dst -d 'Reply destination IP or CIDR (repeatable; the SNAT address)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l guest -d 'Guest name (from --guests, or found on this host: `ctguard guests`), or a CIDR standing for a guest (repeatable)' -r -f -a '(__ctguard_guest_names)'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l guests -d 'Guest file (TOML: name = ["CIDR", ...]); it wins over discovery for its addresses' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l libvirt-dir -d 'libvirt\'s live domain XML, which names guests by their interface and MAC' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l pve-dir -d 'Proxmox VE\'s configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and `veth<VMID>i<N>`' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s p -l proto -d 'Protocol name or number (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l sport -l orig-port-src -d 'Original source port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l dport -l orig-port-dst -d 'Original destination port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l state -d 'States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s u -l status -d 'Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s m -l mark -d 'Mark VALUE[/MASK], decimal or 0x-hex' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s w -l zone -d 'Conntrack zone, whichever directions it applies to' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l orig-zone -d 'Zone of the original direction (the entry\'s zone, or its original-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l reply-zone -d 'Zone of the reply direction (the entry\'s zone, or its reply-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l mask-src -d 'Mask for the one -s address, instead of a /prefix (255.255.255.0; contiguous)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l mask-dst -d 'Mask for the one -d address, instead of a /prefix' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s f -l family -d 'Address family: ipv4 or ipv6' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l idle -d 'Idle at least this long (state timeout minus remaining; e.g. 10m, 1h)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l timeout-below -d 'Less than this long left before the entry expires' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l except -d 'Never select flows with an address in CIDR (repeatable; any of their four addresses)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s l -l label -d 'Connection labels the flow must all have: names from the label map or bit numbers, comma separated (repeatable; like conntrack -l)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l labelmap -d 'The label names (default /etc/xtables/connlabel.conf, as conntrack reads it)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l src-nat -d 'Source-NATed flows (`conntrack -n`): any, or NATed to IP[:PORT] ([IPv6]:PORT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l dst-nat -d 'Destination-NATed flows (`conntrack -g`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l any-nat -d 'Source- or destination-NATed flows (`conntrack -j`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l expect -d 'Delete expectations instead of flows (`conntrack -D expect`): selected by -s, -d, -p, --sport, --dport, -f of the expected tuple, each deleted by tuple and id'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l all -d 'Every flow in the table (must be said explicitly; still asks, or needs --yes)'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s y -l yes -d 'Do not ask: act at once (for scripts; also needed without a terminal)'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l dry-run -d 'Change nothing; report what would be done'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l list -d 'With --dry-run: print every selected flow (conntrack -L lines, JSON Lines with --json)'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l no-audit -d 'Write no audit records'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l json -d 'Print the report as JSON'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -l no-discover -d 'Name guests from the --guests file only: no look at the host\'s interfaces, neighbour tables and hypervisor records'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand evict" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l set-mark -d 'Set the mark: VALUE[/MASK], new = (old & ~MASK) ^ VALUE (conntrack -U -m)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l set-timeout -d 'Set the timeout, in seconds from now (conntrack -U -t)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l set-status -d 'Set status bits, comma separated: ASSURED, SEEN_REPLY, FIXED_TIMEOUT (bits can only be set; conntrack -U -u)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l label-add -d 'Add a connection label: a name from the label map or a bit number (repeatable, or comma separated)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l label-del -d 'Remove a connection label (repeatable, or comma separated)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l batch -d 'Update by the `-U` lines of a `conntrack -R` file (`-` for stdin) instead of flags: one update per line, in order, its `-m`, `-t`, `-u`, `--label-add`, `--label-del` what it sets (as conntrack -U reads them) and its other flags the selection' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l rate -d 'Act on at most N flows a second (N or N/s)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l audit-log -d 'Append the audit records (intent before the first change, outcome after) to this file; if it cannot be written, nothing is changed. \'\' turns auditing off, like --no-audit' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s s -l src -l orig-src -d 'Original source IP or CIDR (repeatable: any of them)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s d -l dst -l orig-dst -d 'Original destination IP or CIDR (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s r -l reply-src -d 'Reply source IP or CIDR (repeatable; the DNAT target)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s q -l reply-dst -d 'Reply destination IP or CIDR (repeatable; the SNAT address)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l guest -d 'Guest name (from --guests, or found on this host: `ctguard guests`), or a CIDR standing for a guest (repeatable)' -r -f -a '(__ctguard_guest_names)'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l guests -d 'Guest file (TOML: name = ["CIDR", ...]); it wins over discovery for its addresses' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l libvirt-dir -d 'libvirt\'s live domain XML, which names guests by their interface and MAC' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l pve-dir -d 'Proxmox VE\'s configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and `veth<VMID>i<N>`' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s p -l proto -d 'Protocol name or number (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l sport -l orig-port-src -d 'Original source port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l dport -l orig-port-dst -d 'Original destination port or range LOW-HIGH (repeatable)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l state -d 'States as `conntrack -L` prints them, comma separated (ESTABLISHED,TIME_WAIT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s u -l status -d 'Status bits, comma separated, `!` negates (ASSURED,!SEEN_REPLY)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s m -l mark -d 'Mark VALUE[/MASK], decimal or 0x-hex' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s w -l zone -d 'Conntrack zone, whichever directions it applies to' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l orig-zone -d 'Zone of the original direction (the entry\'s zone, or its original-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l reply-zone -d 'Zone of the reply direction (the entry\'s zone, or its reply-only zone; else 0)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l mask-src -d 'Mask for the one -s address, instead of a /prefix (255.255.255.0; contiguous)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l mask-dst -d 'Mask for the one -d address, instead of a /prefix' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s f -l family -d 'Address family: ipv4 or ipv6' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l idle -d 'Idle at least this long (state timeout minus remaining; e.g. 10m, 1h)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l timeout-below -d 'Less than this long left before the entry expires' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l except -d 'Never select flows with an address in CIDR (repeatable; any of their four addresses)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s l -l label -d 'Connection labels the flow must all have: names from the label map or bit numbers, comma separated (repeatable; like conntrack -l)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l labelmap -d 'The label names (default /etc/xtables/connlabel.conf, as conntrack reads it)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l src-nat -d 'Source-NATed flows (`conntrack -n`): any, or NATed to IP[:PORT] ([IPv6]:PORT)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l dst-nat -d 'Destination-NATed flows (`conntrack -g`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l any-nat -d 'Source- or destination-NATed flows (`conntrack -j`): any, or NATed to IP[:PORT]' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l all -d 'Every flow in the table (must be said explicitly; still asks, or needs --yes)'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s y -l yes -d 'Do not ask: act at once (for scripts; also needed without a terminal)'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l dry-run -d 'Change nothing; report what would be done'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l list -d 'With --dry-run: print every selected flow (conntrack -L lines, JSON Lines with --json)'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l no-audit -d 'Write no audit records'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l json -d 'Print the report as JSON'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -l no-discover -d 'Name guests from the --guests file only: no look at the host\'s interfaces, neighbour tables and hypervisor records'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand update" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand guard" -l config -d 'The configuration file (TOML; see deploy/guard.toml)' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand guard" -l uncap -d 'Lift the caps of GUEST (or `all`) from ctguard\'s nftables table, and exit' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand guard" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand guard" -l dry-run -d 'Decide and log, never act: no cap, no eviction (whatever the file\'s dry_run says)'
complete -c ctguard -n "__fish_ctguard_using_subcommand guard" -l check -d 'Check the configuration and its guest file, and exit: 0, or 2 with the line at fault'
complete -c ctguard -n "__fish_ctguard_using_subcommand guard" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand guard" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand guests" -l guests -d 'With --names: also the guests named in this file' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand guests" -l libvirt-dir -d 'libvirt\'s live domain XML, which names guests by their interface and MAC' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand guests" -l pve-dir -d 'Proxmox VE\'s configuration (`qemu-server/`, `lxc/`), which names `tap<VMID>i<N>` and `veth<VMID>i<N>`' -r -F
complete -c ctguard -n "__fish_ctguard_using_subcommand guests" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand guests" -l json -d 'Print JSON Lines, one object per row (docs/json-schema.md)'
complete -c ctguard -n "__fish_ctguard_using_subcommand guests" -l names -d 'Print only the guest names `--guest` takes, one a line, sorted: the --guests file\'s and the host\'s (the shell completions call this; a failed look at the host is a warning)'
complete -c ctguard -n "__fish_ctguard_using_subcommand guests" -l no-discover -d 'With --names: the --guests file\'s names only, no look at the host'
complete -c ctguard -n "__fish_ctguard_using_subcommand guests" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand guests" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand completions" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctguard -n "__fish_ctguard_using_subcommand completions" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand man" -l netns -d 'Run inside this network namespace: a name under /run/netns, or a path to a netns file' -r
complete -c ctguard -n "__fish_ctguard_using_subcommand man" -s h -l help -d 'Print help'
complete -c ctguard -n "__fish_ctguard_using_subcommand man" -s V -l version -d 'Print version'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "top" -d 'Who fills the table: fill %, the top owners by entries, per-state columns'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "count" -d 'Count the selected flows, optionally grouped (`--by state` is the procfs awk one-liner)'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "list" -d 'Print the selected flows like `conntrack -L`, or as JSON Lines'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "stats" -d 'Table count, max, fill %, buckets, and the per-CPU counters summed; with --interval, their rise per second, interval after interval'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "create" -d 'Create one flow (`conntrack -I`)'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "load" -d 'Create the flows of a JSON Lines file written by `list --json` (or `-` for stdin)'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "doctor" -d 'Is the table full, who filled it, what to run now (exit 0 healthy, 1 at risk or full)'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "tune" -d 'Recommended conntrack sysctls for this host, each with its reason'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "events" -d 'Print conntrack events like `conntrack -E` (with timestamps), or as JSON Lines'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "watch" -d 'Live counts per group and state from events: a top-like view, or JSON Lines snapshots'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "evict" -d 'Delete exactly the selected flows: preview and confirm, or --yes; --dry-run to see'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "update" -d 'Set mark, timeout, status or labels on the selected flows (`conntrack -U`): preview and confirm, or --yes; --dry-run to see'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "guard" -d 'The always-on guard: live counts per guest, automatic relief, /metrics (see --help)'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "guests" -d 'The guest interfaces found on this host (links, neighbours, bridge FDB): NAME IFACE MAC IPv4 IPv6 SOURCE'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "completions" -d 'Write the completion script of bash, zsh or fish to stdout (guest names included)'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "man" -d 'Write the manual pages (ctguard.8, ctguard-COMMAND.8) into DIR'
complete -c ctguard -n "__fish_ctguard_using_subcommand help; and not __fish_seen_subcommand_from top count list stats create load doctor tune events watch evict update guard guests completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
