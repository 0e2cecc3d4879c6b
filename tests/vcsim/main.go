// Command dwepc-vcsim is the vSphere test peer used by the dwepc integration
// tests. It runs VMware's vCenter simulator (vcsim, from govmomi 0.24 as
// packaged by Debian) in-process and serves its real SOAP API at /sdk, with:
//
//   - an inventory holding exactly the VMs listed in a JSON file (-vms),
//     including guest IP, vCPU count, memory and maximum CPU (MHz);
//   - a PerformanceManager whose QueryPerf answers from a JSON file that is
//     re-read on every call (-counters), so a test can change the counter
//     values at any time; a key "counter@300" gives a value for the 300-s
//     (historical) interval only, and an array of values gives one per
//     sample, cycled by the sample's time;
//   - strict credentials (-user/-pass), optional session idle expiry
//     (-idle-timeout) and optional HTTPS with a generated certificate (-tls);
//   - plain HTTP control endpoints next to /sdk (same port):
//     GET /dwepc/stats, GET /dwepc/fault?mode=..., GET /dwepc/expire,
//     GET /dwepc/resize?vm=NAME&cpus=N&mhz=M (a running VM's vCPU count and
//     maximum CPU change, as after a CPU hot-add);
//   - optionally the cluster's hosts as listed in a JSON file (-hosts:
//     count, CPU, memory, maintenance mode) and each VM on a chosen host;
//   - inventory answers paged as a real vCenter pages them: at most
//     `maxObjects` objects per RetrievePropertiesEx answer and a `token`
//     for ContinueRetrievePropertiesEx (vcsim itself answers everything at
//     once);
//   - a "migratefail" fault: RelocateVM_Task/MigrateVM_Task return a task
//     that fails with MigrationFault.
//     With -tls the port speaks both TLS and plain HTTP (told apart by the
//     first byte); plain HTTP is then accepted for /dwepc/ only.
//
// Flags: -listen ADDR (loopback only, default 127.0.0.1:0), -ready FILE, -hosts FILE, -standalone N,
// -vms FILE, -counters FILE, -refresh SECONDS, -tls, -cert-out FILE,
// -tls-state FILE, -idle-timeout DURATION, -user U, -pass P,
// -model vpx|esx, -empty-entity omit|keep, -trace. Once listening it prints
// {"url":"http(s)://127.0.0.1:PORT/sdk","pid":N} on stdout (and to -ready).
// SIGTERM/SIGINT stop it cleanly.
//
// Build (GOPATH mode, no module proxy needed):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o dwepc-vcsim ./tests/vcsim
//
// or use scripts/build-vcsim.sh. See PROTOCOL.md next to this file for the
// SOAP requests/responses observed against this launcher.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

// options holds the parsed command line.
type options struct {
	listen      string
	ready       string
	vmsFile     string
	hostsFile   string
	standalone  int
	counters    string
	refresh     int
	tls         bool
	certOut     string
	tlsState    string
	idleTimeout time.Duration
	user        string
	pass        string
	model       string
	emptyEntity string
	trace       bool
}

func parseFlags() *options {
	o := new(options)
	flag.StringVar(&o.listen, "listen", "127.0.0.1:0", "loopback `ADDR` (host:port) to listen on; port 0 picks a free port")
	flag.StringVar(&o.ready, "ready", "", "write the ready JSON line to `FILE` (atomically) once listening")
	flag.StringVar(&o.vmsFile, "vms", "", "JSON `FILE`: array of VMs to create (without it the model's default VMs are kept)")
	flag.StringVar(&o.hostsFile, "hosts", "", "JSON `FILE`: array of the cluster's hosts (cpu_mhz per core, cores, memory_mb, maintenance), named DC0_C0_H0, DC0_C0_H1, ...")
	flag.IntVar(&o.standalone, "standalone", 0, "with -vms: `N` standalone hosts (each its own compute resource, DC0_H0, ...) besides the cluster")
	flag.StringVar(&o.counters, "counters", "", "JSON `FILE` with counter values per VM name, re-read on every QueryPerf")
	flag.IntVar(&o.refresh, "refresh", 20, "realtime refresh rate in `SECONDS` reported by QueryPerfProviderSummary")
	flag.BoolVar(&o.tls, "tls", false, "serve HTTPS with a generated certificate for 127.0.0.1")
	flag.StringVar(&o.certOut, "cert-out", "", "with -tls: write the PEM CA certificate that signed the server certificate to `FILE`")
	flag.StringVar(&o.tlsState, "tls-state", "", "with -tls: reuse the certificates and key saved in `FILE`, or save new ones there (keeps the certificate across restarts)")
	flag.DurationVar(&o.idleTimeout, "idle-timeout", 0, "expire sessions idle for this `DURATION` (0 = never)")
	flag.StringVar(&o.user, "user", "user", "the only user name accepted by Login")
	flag.StringVar(&o.pass, "pass", "pass", "the only password accepted by Login")
	flag.StringVar(&o.model, "model", "vpx", "simulator model: vpx (vCenter) or esx (standalone host)")
	flag.StringVar(&o.emptyEntity, "empty-entity", "omit", "QueryPerf entity without any value: omit (leave it out of the result) or keep (PerfEntityMetric with no samples)")
	flag.BoolVar(&o.trace, "trace", false, "log SOAP requests and responses to stderr")
	flag.Parse()

	if o.refresh <= 0 {
		log.Fatalf("-refresh must be > 0")
	}
	if o.model != "vpx" && o.model != "esx" {
		log.Fatalf("-model must be vpx or esx")
	}
	if o.emptyEntity != "omit" && o.emptyEntity != "keep" {
		log.Fatalf("-empty-entity must be omit or keep")
	}
	if o.user == "" || o.pass == "" {
		log.Fatalf("-user and -pass must not be empty")
	}
	return o
}

// ---------------------------------------------------------------------------
// VM specification (-vms)
// ---------------------------------------------------------------------------

// vmSpec is one entry of the -vms file.
type vmSpec struct {
	Name     string `json:"name"`
	IP       string `json:"ip"`        // optional guest IP address
	NumCPU   int32  `json:"num_cpu"`   // default 1
	CPUMHz   int32  `json:"cpu_mhz"`   // summary.runtime.maxCpuUsage; default 2000 * num_cpu
	MemoryMB int32  `json:"memory_mb"` // default 1024
	Power    string `json:"power"`     // "on" (default) or "off"
	Host     string `json:"host"`      // host to run on (e.g. DC0_C0_H1); default: the simulator's choice
	Folder   string `json:"folder"`    // VM folder inside the datacenter's vm folder, created if missing; default: the vm folder itself
}

// hostSpec is one entry of the -hosts file: the cluster's i-th host,
// DC0_C0_H<i>.
type hostSpec struct {
	CPUMHz      int32 `json:"cpu_mhz"`   // per core; default 2000
	Cores       int16 `json:"cores"`     // default 8
	MemoryMB    int64 `json:"memory_mb"` // default 65536
	Maintenance bool  `json:"maintenance"`
}

func readHostSpecs(path string) ([]hostSpec, error) {
	data, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var specs []hostSpec
	if err := json.Unmarshal(data, &specs); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("%s: no host", path)
	}
	for i := range specs {
		s := &specs[i]
		if s.CPUMHz <= 0 {
			s.CPUMHz = 2000
		}
		if s.Cores <= 0 {
			s.Cores = 8
		}
		if s.MemoryMB <= 0 {
			s.MemoryMB = 65536
		}
	}
	return specs, nil
}

// configureHosts sets the cluster hosts' hardware summary and maintenance
// mode (on the simulator objects, through Registry.Update).
func configureHosts(specs []hostSpec) error {
	for i, s := range specs {
		name := fmt.Sprintf("DC0_C0_H%d", i)
		var host mo.Reference
		for _, obj := range simulator.Map.All("HostSystem") {
			if e, ok := obj.(mo.Entity); ok && e.Entity().Name == name {
				host = obj
			}
		}
		if host == nil {
			return fmt.Errorf("host %s not in the model", name)
		}
		simulator.Map.WithLock(host, func() {
			simulator.Map.Update(host, []types.PropertyChange{
				{Name: "summary.hardware.cpuMhz", Val: s.CPUMHz},
				{Name: "summary.hardware.numCpuCores", Val: s.Cores},
				{Name: "summary.hardware.memorySize", Val: s.MemoryMB * 1024 * 1024},
				{Name: "runtime.inMaintenanceMode", Val: s.Maintenance},
			})
		})
	}
	return nil
}

func readVMSpecs(path string) ([]vmSpec, error) {
	data, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var specs []vmSpec
	if err := json.Unmarshal(data, &specs); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	seen := make(map[string]bool)
	for i := range specs {
		s := &specs[i]
		if s.Name == "" {
			return nil, fmt.Errorf("%s: VM #%d has no name", path, i)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("%s: duplicate VM name %q", path, s.Name)
		}
		seen[s.Name] = true
		if s.NumCPU <= 0 {
			s.NumCPU = 1
		}
		if s.MemoryMB <= 0 {
			s.MemoryMB = 1024
		}
		if s.CPUMHz <= 0 {
			s.CPUMHz = 2000 * s.NumCPU
		}
		switch s.Power {
		case "":
			s.Power = "on"
		case "on", "off":
		default:
			return nil, fmt.Errorf("%s: VM %q: power must be \"on\" or \"off\"", path, s.Name)
		}
		if s.IP != "" && net.ParseIP(s.IP) == nil {
			return nil, fmt.Errorf("%s: VM %q: bad ip %q", path, s.Name, s.IP)
		}
	}
	return specs, nil
}

// createVMs creates the VMs through the simulator's own API (an in-process
// vim25 client talking to the Service without HTTP), exactly as a real
// client would: CreateVM_Task, PowerOnVM_Task, ReconfigVM_Task.
// vmFolderOf is the folder `name` inside the datacenter's vm folder
// (created on first use), or the vm folder itself for "".
func vmFolderOf(ctx context.Context, finder *find.Finder, vmFolder *object.Folder, name string) (*object.Folder, error) {
	if name == "" {
		return vmFolder, nil
	}
	if f, err := finder.Folder(ctx, vmFolder.InventoryPath+"/"+name); err == nil {
		return f, nil
	}
	return vmFolder.CreateFolder(ctx, name)
}

func createVMs(svc *simulator.Service, specs []vmSpec) error {
	ctx := context.Background()

	c, err := vim25.NewClient(ctx, svc)
	if err != nil {
		return err
	}

	finder := find.NewFinder(c, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return fmt.Errorf("datacenter: %v", err)
	}
	finder.SetDatacenter(dc)

	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	// the cluster's pool (with -standalone there are several pools), or
	// the only one (the ESX model)
	pool, err := finder.ResourcePool(ctx, "DC0_C0/Resources")
	if err != nil {
		if pool, err = finder.DefaultResourcePool(ctx); err != nil {
			return fmt.Errorf("resource pool: %v", err)
		}
	}
	ds, err := finder.DefaultDatastore(ctx)
	if err != nil {
		return fmt.Errorf("datastore: %v", err)
	}
	network, err := pickNetwork(ctx, finder)
	if err != nil {
		return fmt.Errorf("network: %v", err)
	}
	backing, err := network.EthernetCardBackingInfo(ctx)
	if err != nil {
		return err
	}

	for _, s := range specs {
		// One NIC, so that guest.net has one entry to carry the IP.
		var devices object.VirtualDeviceList
		nic, err := devices.CreateEthernetCard("vmxnet3", backing)
		if err != nil {
			return err
		}
		devices = append(devices, nic)
		change, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
		if err != nil {
			return err
		}

		spec := types.VirtualMachineConfigSpec{
			Name:         s.Name,
			GuestId:      string(types.VirtualMachineGuestOsIdentifierOtherGuest64),
			NumCPUs:      s.NumCPU,
			MemoryMB:     int64(s.MemoryMB),
			Files:        &types.VirtualMachineFileInfo{VmPathName: "[" + ds.Name() + "]"},
			DeviceChange: change,
		}
		var host *object.HostSystem
		if s.Host != "" {
			if host, err = finder.HostSystem(ctx, s.Host); err != nil {
				return fmt.Errorf("VM %s: host %s: %v", s.Name, s.Host, err)
			}
		}
		vmFolder, err := vmFolderOf(ctx, finder, folders.VmFolder, s.Folder)
		if err != nil {
			return fmt.Errorf("VM %s: folder %s: %v", s.Name, s.Folder, err)
		}
		task, err := vmFolder.CreateVM(ctx, spec, pool, host)
		if err != nil {
			return err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return fmt.Errorf("create %s: %v", s.Name, err)
		}
		ref := info.Result.(types.ManagedObjectReference)
		vm := object.NewVirtualMachine(c, ref)

		if s.Power == "on" {
			task, err := vm.PowerOn(ctx)
			if err != nil {
				return err
			}
			if err := task.Wait(ctx); err != nil {
				return fmt.Errorf("power on %s: %v", s.Name, err)
			}
		}

		if s.IP != "" {
			// vcsim treats extraConfig keys "SET.<property path>" as
			// "set this property": SET.guest.ipAddress sets guest.ipAddress,
			// summary.guest.ipAddress and guest.net[0].ipAddress.
			task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{
				ExtraConfig: []types.BaseOptionValue{
					&types.OptionValue{Key: "SET.guest.ipAddress", Value: s.IP},
				},
			})
			if err != nil {
				return err
			}
			if err := task.Wait(ctx); err != nil {
				return fmt.Errorf("set ip of %s: %v", s.Name, err)
			}
		}

		// Nothing in vcsim sets the runtime maxima, so set them directly
		// on the simulator object (through Registry.Update, which also
		// notifies property collectors).
		obj := simulator.Map.Get(ref)
		simulator.Map.WithLock(obj, func() {
			simulator.Map.Update(obj, []types.PropertyChange{
				{Name: "summary.runtime.maxCpuUsage", Val: s.CPUMHz},
				{Name: "summary.runtime.maxMemoryUsage", Val: s.MemoryMB},
				// the same object in a real vCenter (vmware_exporter
				// reads this one)
				{Name: "runtime.maxCpuUsage", Val: s.CPUMHz},
				{Name: "runtime.maxMemoryUsage", Val: s.MemoryMB},
			})
		})
	}
	return nil
}

// pickNetwork returns the network for the VMs' NIC: the first distributed
// port group of the VPX model, or the ESX model's "VM Network".
func pickNetwork(ctx context.Context, finder *find.Finder) (object.NetworkReference, error) {
	nets, err := finder.NetworkList(ctx, "*")
	if err != nil {
		return nil, err
	}
	for _, n := range nets {
		if pg, ok := n.(*object.DistributedVirtualPortgroup); ok && !strings.Contains(pg.InventoryPath, "Uplink") {
			return n, nil
		}
	}
	for _, n := range nets {
		if _, ok := n.(*object.Network); ok {
			return n, nil
		}
	}
	return nil, errors.New("no usable network in the model")
}

// ---------------------------------------------------------------------------
// PerformanceManager replacement (-counters, -refresh)
// ---------------------------------------------------------------------------

// perfManager replaces the simulator's PerformanceManager in the registry.
//
// The simulator dispatches a SOAP method by reflection on the registered
// object (reflect.Value.MethodByName), so our QueryPerf,
// QueryPerfProviderSummary and QueryPerfCounter shadow the embedded ones
// (and QueryPerfCounterByLevel adds a method vcsim lacks), while every
// other method (QueryAvailablePerfMetric, ...) and every property
// (perfCounter, historicalInterval, ...) comes from the embedded value. The embedded PerformanceManager must stay the FIRST field: the
// property collector finds the mo.PerformanceManager data by following
// field 0 of wrapper types.
type perfManager struct {
	simulator.PerformanceManager

	countersFile string
	refresh      int32
	keepEmpty    bool
	names        map[int32]string                // counter id -> "group.name.rollup"
	info         map[int32]types.PerfCounterInfo // counter id -> info
}

// installPerfManager swaps our perfManager into the registry in place of the
// simulator's own PerformanceManager (same managed object reference).
func installPerfManager(o *options) error {
	si, ok := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	if !ok || si.Content.PerfManager == nil {
		return errors.New("no ServiceInstance/PerformanceManager in the model")
	}
	orig, ok := simulator.Map.Get(*si.Content.PerfManager).(*simulator.PerformanceManager)
	if !ok {
		return errors.New("unexpected PerformanceManager type in the registry")
	}

	pm := &perfManager{
		PerformanceManager: *orig, // by value: keeps the initialised counter tables
		countersFile:       o.counters,
		refresh:            int32(o.refresh),
		keepEmpty:          o.emptyEntity == "keep",
		names:              make(map[int32]string),
		info:               make(map[int32]types.PerfCounterInfo),
	}
	for _, c := range pm.PerfCounter {
		name := fmt.Sprintf("%s.%s.%s",
			c.GroupInfo.GetElementDescription().Key,
			c.NameInfo.GetElementDescription().Key,
			c.RollupType)
		pm.names[c.Key] = name
		pm.info[c.Key] = c
	}
	simulator.Map.Put(pm) // same Self reference: replaces the original
	return nil
}

// ---------------------------------------------------------------------------
// PropertyCollector replacement: paging as a real vCenter does
// ---------------------------------------------------------------------------

// pagingCollector shadows the simulator's RetrievePropertiesEx, which
// ignores `maxObjects` and answers every object at once, and adds
// ContinueRetrievePropertiesEx and CancelRetrievePropertiesEx: an answer
// holds at most `maxObjects` objects and a `token` for the rest, as a real
// vCenter's does. The simulator makes a per-session copy of the root
// PropertyCollector with reflect.New of the registered type, so this type
// must work from its zero value: the pages left to hand out live in the
// package-level `pages`, not in the struct. The embedded PropertyCollector
// must stay the FIRST field (see perfManager).
type pagingCollector struct {
	simulator.PropertyCollector
}

// pageStore holds, by token, the objects not yet handed out and the page
// size asked for; at most maxPendingTokens tokens are kept (the oldest is
// dropped, and a ContinueRetrievePropertiesEx with it gets
// InvalidArgument), so a client that never continues cannot grow the
// launcher's memory.
type pageStore struct {
	mu    sync.Mutex
	next  int
	rest  map[string]pending
	order []string
}

type pending struct {
	objects []types.ObjectContent
	max     int
}

const maxPendingTokens = 64

var pages = pageStore{rest: make(map[string]pending)}

// page returns the first max objects of all, and a token for the rest ("" if
// none are left).
func (s *pageStore) page(all []types.ObjectContent, max int) ([]types.ObjectContent, string) {
	if max <= 0 || len(all) <= max {
		return all, ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	token := "page-" + strconv.Itoa(s.next)
	s.rest[token] = pending{objects: all[max:], max: max}
	s.order = append(s.order, token)
	for len(s.order) > maxPendingTokens {
		delete(s.rest, s.order[0])
		s.order = s.order[1:]
	}
	return all[:max], token
}

// take removes and returns what is stored under token.
func (s *pageStore) take(token string) (pending, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.rest[token]
	if ok {
		delete(s.rest, token)
		for i, t := range s.order {
			if t == token {
				s.order = append(s.order[:i], s.order[i+1:]...)
				break
			}
		}
	}
	return p, ok
}

func (pc *pagingCollector) RetrievePropertiesEx(ctx *simulator.Context, r *types.RetrievePropertiesEx) soap.HasFault {
	res := pc.PropertyCollector.RetrievePropertiesEx(ctx, r)
	body, ok := res.(*methods.RetrievePropertiesExBody)
	if !ok || body.Res == nil || body.Res.Returnval == nil {
		return res
	}
	rv := body.Res.Returnval
	rv.Objects, rv.Token = pages.page(rv.Objects, int(r.Options.MaxObjects))
	return body
}

func (pc *pagingCollector) ContinueRetrievePropertiesEx(ctx *simulator.Context, r *types.ContinueRetrievePropertiesEx) soap.HasFault {
	body := &methods.ContinueRetrievePropertiesExBody{}
	rest, ok := pages.take(r.Token)
	if !ok {
		body.Fault_ = simulator.Fault("unknown or expired token", &types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	objects, token := pages.page(rest.objects, rest.max)
	body.Res = &types.ContinueRetrievePropertiesExResponse{
		Returnval: types.RetrieveResult{Token: token, Objects: objects},
	}
	return body
}

func (pc *pagingCollector) CancelRetrievePropertiesEx(ctx *simulator.Context, r *types.CancelRetrievePropertiesEx) soap.HasFault {
	pages.take(r.Token)
	return &methods.CancelRetrievePropertiesExBody{Res: &types.CancelRetrievePropertiesExResponse{}}
}

// installPagingCollector swaps pagingCollector into the registry in place of
// the simulator's root PropertyCollector (same managed object reference).
func installPagingCollector() error {
	ref := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance).Content.PropertyCollector
	orig, ok := simulator.Map.Get(ref).(*simulator.PropertyCollector)
	if !ok {
		return errors.New("unexpected PropertyCollector type in the registry")
	}
	pc := &pagingCollector{}
	pc.Self = orig.Self
	simulator.Map.Put(pc) // same Self reference: replaces the original
	return nil
}

// counterData is one reading of the -counters file.
type counterData struct {
	time   *time.Time                  // "_time" override, if any
	values map[string]map[string][]int64 // entity name -> counter key -> values
}

// loadCounters reads the counters file. A missing or unparseable file (or
// entry) simply yields no values, as documented.
func loadCounters(path string) counterData {
	d := counterData{values: make(map[string]map[string][]int64)}
	if path == "" {
		return d
	}
	raw, err := ioutil.ReadFile(path)
	if err != nil {
		return d
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		log.Printf("counters file %s: %v (treated as empty)", path, err)
		return d
	}
	for name, msg := range top {
		if name == "_time" {
			var s string
			if json.Unmarshal(msg, &s) == nil {
				if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
					t = t.UTC()
					d.time = &t
				}
			}
			continue
		}
		var entry map[string]json.RawMessage
		if err := json.Unmarshal(msg, &entry); err != nil {
			continue
		}
		vals := make(map[string][]int64, len(entry))
		for k, raw := range entry {
			// a number, or an array of numbers (one per sample, cycled)
			var nums []json.Number
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			var one json.Number
			if err := dec.Decode(&one); err == nil {
				nums = []json.Number{one}
			} else {
				dec = json.NewDecoder(bytes.NewReader(raw))
				dec.UseNumber()
				if err := dec.Decode(&nums); err != nil {
					continue
				}
			}
			var seq []int64
			for _, n := range nums {
				if i, err := n.Int64(); err == nil {
					seq = append(seq, i)
				} else if f, err := n.Float64(); err == nil {
					seq = append(seq, int64(math.Round(f)))
				}
			}
			if len(seq) > 0 {
				vals[k] = seq
			}
		}
		d.values[name] = vals
	}
	return d
}

// seriesFor returns the (instance, value) pairs for one requested metric id.
//
// Counter keys in the file are "group.name.rollup" for the aggregate
// instance "" and "group.name.rollup:INSTANCE" for a specific instance.
// Instance "*" in the request returns every instance present in the file.
// atInterval returns the values a VM reports at sampling interval
// `interval` (seconds): a key "name@300" is the value of "name" at the
// 300-s interval only (it overrides "name" there); keys for other
// intervals are left out.
func atInterval(vals map[string][]int64, interval int32) map[string][]int64 {
	out := make(map[string][]int64, len(vals))
	suffix := "@" + strconv.Itoa(int(interval))
	for k, v := range vals {
		if !strings.Contains(k, "@") {
			if _, over := vals[k+suffix]; !over {
				out[k] = v
			}
		} else if strings.HasSuffix(k, suffix) {
			out[strings.TrimSuffix(k, suffix)] = v
		}
	}
	return out
}

// valueAt is the value of a series at sample time t: a single value, or
// the sequence's entry for the sample's position on the interval's grid
// (so the same time always has the same value, whatever the query).
func valueAt(seq []int64, t time.Time, interval int32) int64 {
	if len(seq) == 1 || interval <= 0 {
		return seq[0]
	}
	k := t.Unix() / int64(interval) % int64(len(seq))
	if k < 0 {
		k += int64(len(seq))
	}
	return seq[k]
}

func seriesFor(vals map[string][]int64, key, instance string) (instances []string, values [][]int64) {
	if key == "" || vals == nil {
		return nil, nil
	}
	switch instance {
	case "*":
		if v, ok := vals[key]; ok {
			instances = append(instances, "")
			values = append(values, v)
		}
		var extra []string
		for k := range vals {
			if strings.HasPrefix(k, key+":") {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		for _, k := range extra {
			instances = append(instances, strings.TrimPrefix(k, key+":"))
			values = append(values, vals[k])
		}
	case "":
		if v, ok := vals[key]; ok {
			instances, values = []string{""}, [][]int64{v}
		}
	default:
		if v, ok := vals[key+":"+instance]; ok {
			instances, values = []string{instance}, [][]int64{v}
		}
	}
	return instances, values
}

// PerfMetricIntSeries stands in for types.PerfMetricIntSeries in QueryPerf
// results. The govmomi type tags Value with ",omitempty", which its XML
// encoder applies to each element, so a sample value of 0 would vanish from
// the response (<value> series with an <id> and no values). Real vSphere
// sends <value>0</value>. The encoder derives xsi:type from the Go type
// name, so this type is still announced as "PerfMetricIntSeries".
type PerfMetricIntSeries struct {
	types.PerfMetricSeries

	Value []int64 `xml:"value"`
}

// QueryPerf shadows simulator.PerformanceManager.QueryPerf: values come from
// the counters file (re-read now), timestamps from "_time" or the current
// time truncated to the interval.
func (p *perfManager) QueryPerf(ctx *simulator.Context, req *types.QueryPerf) soap.HasFault {
	body := &methods.QueryPerfBody{Req: req, Res: new(types.QueryPerfResponse)}
	data := loadCounters(p.countersFile)
	now := time.Now().UTC()

	for _, qs := range req.QuerySpec {
		obj := ctx.Map.Get(qs.Entity)
		if obj == nil {
			body.Res = nil
			body.Fault_ = simulator.Fault(fmt.Sprintf("managed object not found: %s", qs.Entity),
				&types.ManagedObjectNotFound{Obj: qs.Entity})
			return body
		}
		var name string
		if e, ok := obj.(mo.Entity); ok {
			name = e.Entity().Name
		}
		// Sample times: the newest is "_time" or now truncated to the
		// interval; older ones step back by the interval. startTime is
		// exclusive and endTime inclusive, as in vSphere.
		interval := qs.IntervalId
		if interval <= 0 {
			interval = p.refresh
		}
		vals := atInterval(data.values[name], interval)
		step := time.Duration(interval) * time.Second
		latest := now.Truncate(step)
		if data.time != nil {
			latest = *data.time
		}
		if qs.EndTime != nil && latest.After(*qs.EndTime) {
			latest = qs.EndTime.UTC().Truncate(step)
		}
		limit := int(qs.MaxSample)
		if limit <= 0 {
			limit = 1
			if qs.StartTime != nil {
				limit = 180 // an hour of 20 s samples
			}
		}
		if limit > 4320 {
			limit = 4320 // a day of 20 s samples: enough for any test
		}
		var stamps []time.Time // oldest first, like vSphere
		for i := limit - 1; i >= 0; i-- {
			t := latest.Add(-time.Duration(i) * step)
			if qs.StartTime != nil && !t.After(*qs.StartTime) {
				continue
			}
			stamps = append(stamps, t)
		}

		// One series per requested metric id that has a value.
		type series struct {
			id     types.PerfMetricId
			values []int64 // cycled over the samples by their time
		}
		var found []series
		if len(stamps) > 0 {
			for _, mid := range qs.MetricId {
				insts, values := seriesFor(vals, p.names[mid.CounterId], mid.Instance)
				for i := range insts {
					found = append(found, series{
						id:    types.PerfMetricId{CounterId: mid.CounterId, Instance: insts[i]},
						values: values[i],
					})
				}
			}
		}
		if len(found) == 0 {
			if p.keepEmpty {
				m := &types.PerfEntityMetric{}
				m.Entity = qs.Entity
				body.Res.Returnval = append(body.Res.Returnval, m)
			}
			continue
		}

		if qs.Format == string(types.PerfFormatCsv) {
			m := &types.PerfEntityMetricCSV{}
			m.Entity = qs.Entity
			var info []string
			for _, t := range stamps {
				info = append(info, strconv.Itoa(int(interval)), t.Format(time.RFC3339))
			}
			m.SampleInfoCSV = strings.Join(info, ",")
			for _, s := range found {
				v := make([]string, len(stamps))
				for i := range v {
					v[i] = strconv.FormatInt(valueAt(s.values, stamps[i], interval), 10)
				}
				cs := types.PerfMetricSeriesCSV{Value: strings.Join(v, ",")}
				cs.Id = s.id
				m.Value = append(m.Value, cs)
			}
			body.Res.Returnval = append(body.Res.Returnval, m)
			continue
		}

		m := &types.PerfEntityMetric{}
		m.Entity = qs.Entity
		for _, t := range stamps {
			m.SampleInfo = append(m.SampleInfo, types.PerfSampleInfo{Timestamp: t, Interval: interval})
		}
		for _, s := range found {
			is := &PerfMetricIntSeries{Value: make([]int64, len(stamps))}
			is.Id = s.id
			for i := range is.Value {
				is.Value[i] = valueAt(s.values, stamps[i], interval)
			}
			m.Value = append(m.Value, is)
		}
		body.Res.Returnval = append(body.Res.Returnval, m)
	}
	return body
}

// QueryPerfCounter shadows the simulator's version, which dereferences a nil
// response in govmomi 0.24 (the connection just closes). Same semantics:
// the infos of the given counter ids, InvalidArgument for an unknown id.
func (p *perfManager) QueryPerfCounter(ctx *simulator.Context, req *types.QueryPerfCounter) soap.HasFault {
	body := &methods.QueryPerfCounterBody{Req: req}
	res := new(types.QueryPerfCounterResponse)
	for _, id := range req.CounterId {
		info, ok := p.info[id]
		if !ok {
			body.Fault_ = simulator.Fault("", &types.InvalidArgument{InvalidProperty: "counterId"})
			return body
		}
		res.Returnval = append(res.Returnval, info)
	}
	body.Res = res
	return body
}

// QueryPerfCounterByLevel is missing from the simulator (MethodNotFound);
// this returns every counter whose level is at most the given one, which
// is far smaller than the whole perfCounter property.
func (p *perfManager) QueryPerfCounterByLevel(ctx *simulator.Context, req *types.QueryPerfCounterByLevel) soap.HasFault {
	body := &methods.QueryPerfCounterByLevelBody{Req: req, Res: new(types.QueryPerfCounterByLevelResponse)}
	for _, c := range p.PerfCounter {
		if c.Level <= req.Level {
			body.Res.Returnval = append(body.Res.Returnval, c)
		}
	}
	return body
}

// QueryPerfProviderSummary shadows the simulator's version so that realtime
// entities (VMs, hosts, resource pools) report -refresh as refreshRate.
func (p *perfManager) QueryPerfProviderSummary(ctx *simulator.Context, req *types.QueryPerfProviderSummary) soap.HasFault {
	res := p.PerformanceManager.QueryPerfProviderSummary(ctx, req)
	if body, ok := res.(*methods.QueryPerfProviderSummaryBody); ok && body.Res != nil {
		if body.Res.Returnval.CurrentSupported {
			body.Res.Returnval.RefreshRate = p.refresh
		}
	}
	return res
}

// ---------------------------------------------------------------------------
// Sessions (stats and /dwepc/expire)
// ---------------------------------------------------------------------------

// adminSession is a private session used to call SessionManager methods
// directly. It is not registered, so it is never counted or expired.
var adminSession = &simulator.Session{
	UserSession: types.UserSession{Key: "dwepc-vcsim-control", UserName: "dwepc-vcsim"},
	Registry:    simulator.NewRegistry(),
}

// activeSessionKeys lists the keys of the sessions the SessionManager knows.
// Session.Get of the SessionManager yields a copy with SessionList filled in
// (under the simulator's own session lock).
func activeSessionKeys() []string {
	ref := simulator.Map.SessionManager().Reference()
	sm, ok := adminSession.Get(ref).(*simulator.SessionManager)
	if !ok {
		return nil
	}
	keys := make([]string, 0, len(sm.SessionList))
	for _, s := range sm.SessionList {
		keys = append(keys, s.Key)
	}
	return keys
}

// terminateAllSessions ends every session through SessionManager.TerminateSession,
// one at a time (a session may expire by itself in between).
func terminateAllSessions() int {
	sm := simulator.Map.SessionManager()
	ctx := &simulator.Context{Context: context.Background(), Session: adminSession, Map: simulator.Map}
	n := 0
	for _, key := range activeSessionKeys() {
		res := sm.TerminateSession(ctx, &types.TerminateSession{This: sm.Self, SessionId: []string{key}})
		if res.Fault() == nil {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------------------
// HTTP front end: statistics, fault injection, control endpoints
// ---------------------------------------------------------------------------

// faultModes are the accepted values of /dwepc/fault?mode=.
var faultModes = map[string]bool{"none": true, "hang": true, "http500": true, "garbage": true, "notauth": true,
	"flood": true, "huge": true, "elements": true, "migratefail": true, "noperm": true}

// hostileCap bounds what the hostile faults write per request, so a client
// that reads without limit still ends.
const hostileCap = 1 << 30

// writeHostile answers with a body no legitimate call returns: "flood", an
// endless chunked stream of elements (until the client goes away or
// hostileCap); "huge", a 200 MB body with its Content-Length; "elements",
// 8 MB of 2,000,000 empty elements in a well-formed envelope.
func writeHostile(w http.ResponseWriter, mode string) {
	const head = `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval>`
	const tail = `</returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>`
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	chunk := []byte(strings.Repeat("<x>flood</x>", 4096))
	switch mode {
	case "flood":
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, head)
		for n := 0; n < hostileCap; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	case "huge":
		const size = 200 << 20
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, head)
		for n := len(head); n < size; n += len(chunk) {
			part := chunk
			if size-n < len(part) {
				part = part[:size-n]
			}
			if _, err := w.Write(part); err != nil {
				return
			}
		}
	case "elements":
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, head)
		empty := []byte(strings.Repeat("<a/>", 1<<16))
		for n := 0; n < 2000000; n += 1 << 16 {
			if _, err := w.Write(empty); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, tail)
	}
}

// maxHang caps how long "hang" holds a request.
const maxHang = 10 * time.Minute

// frontend wraps the simulator's ServeMux.
type frontend struct {
	sim     http.Handler  // the simulator's own mux (/sdk -> Service.ServeSDK)
	closing chan struct{} // closed on shutdown: releases hung requests

	mu      sync.Mutex
	mode    string
	changed chan struct{} // closed and replaced whenever mode changes
	logins  int64
	logouts int64
	calls   map[string]int64
}

func newFrontend(sim http.Handler) *frontend {
	return &frontend{
		sim:     sim,
		closing: make(chan struct{}),
		mode:    "none",
		changed: make(chan struct{}),
		calls:   make(map[string]int64),
	}
}

// ServeHTTP routes /dwepc/* to the control endpoints, /sdk through the
// statistics and fault wrapper to the simulator, anything else straight to
// the simulator's mux.
func (f *frontend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/dwepc/") && plainHTTP(r) {
		http.Error(w, "dwepc-vcsim: this server speaks HTTPS (plain HTTP only for /dwepc/)", http.StatusBadRequest)
		return
	}
	switch {
	case r.URL.Path == "/dwepc/stats":
		f.serveStats(w, r)
	case r.URL.Path == "/dwepc/fault":
		f.serveFault(w, r)
	case r.URL.Path == "/dwepc/resize":
		serveResize(w, r)
	case r.URL.Path == "/dwepc/expire":
		n := terminateAllSessions()
		fmt.Fprintf(w, "ok %d\n", n)
	case r.URL.Path == "/sdk" || strings.HasPrefix(r.URL.Path, "/sdk/"):
		f.serveSDK(w, r)
	default:
		f.sim.ServeHTTP(w, r)
	}
}

func (f *frontend) serveStats(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	out := struct {
		Logins   int64            `json:"logins"`
		Logouts  int64            `json:"logouts"`
		Sessions int              `json:"sessions"`
		Calls    map[string]int64 `json:"calls"`
		Fault    string           `json:"fault"`
	}{f.logins, f.logouts, 0, make(map[string]int64, len(f.calls)), f.mode}
	for k, v := range f.calls {
		out.Calls[k] = v
	}
	f.mu.Unlock()
	out.Sessions = len(activeSessionKeys())

	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&out)
}

func (f *frontend) serveFault(w http.ResponseWriter, r *http.Request) {
	mode := r.URL.Query().Get("mode")
	if !faultModes[mode] {
		http.Error(w, "mode must be one of none|hang|http500|garbage|notauth|flood|huge|elements|migratefail|noperm", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	if mode != f.mode {
		f.mode = mode
		close(f.changed)
		f.changed = make(chan struct{})
	}
	f.mu.Unlock()
	log.Printf("fault mode: %s", mode)
	_, _ = io.WriteString(w, "ok\n")
}

// serveResize sets a VM's vCPU count (config.hardware.numCPU,
// summary.config.numCpu) and maximum CPU (summary.runtime.maxCpuUsage, MHz)
// while it runs, as a CPU hot-add does; the inventory's next read shows
// them. Through Registry.Update, so property collectors hear of it.
func serveResize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("vm")
	cpus, err1 := strconv.Atoi(q.Get("cpus"))
	mhz, err2 := strconv.Atoi(q.Get("mhz"))
	if name == "" || err1 != nil || err2 != nil || cpus < 1 || cpus > 768 || mhz < 1 {
		http.Error(w, "usage: /dwepc/resize?vm=NAME&cpus=1..768&mhz=M (M >= 1)", http.StatusBadRequest)
		return
	}
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm, ok := e.(*simulator.VirtualMachine)
		if !ok || vm.Name != name {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "config.hardware.numCPU", Val: int32(cpus)},
				{Name: "summary.config.numCpu", Val: int32(cpus)},
				{Name: "summary.runtime.maxCpuUsage", Val: int32(mhz)},
				{Name: "runtime.maxCpuUsage", Val: int32(mhz)},
			})
		})
		log.Printf("resize: VM %s: %d vCPUs, %d MHz", name, cpus, mhz)
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	http.Error(w, "no VM named "+name, http.StatusNotFound)
}

// currentMode returns the fault mode and a channel closed when it changes.
func (f *frontend) currentMode() (string, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mode, f.changed
}

// statusRecorder remembers the status code written by the simulator.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// serveSDK counts the SOAP call, applies the current fault mode, and
// otherwise hands the request to the real simulator.
func (f *frontend) serveSDK(w http.ResponseWriter, r *http.Request) {
	body, err := ioutil.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	r.Body = ioutil.NopCloser(bytes.NewReader(body))

	call := parseSOAPCall(body)
	if r.Method == http.MethodPost && call.method != "" {
		f.mu.Lock()
		f.calls[call.method]++
		f.mu.Unlock()
	}

	deadline := time.NewTimer(maxHang)
	defer deadline.Stop()
	for {
		mode, changed := f.currentMode()
		switch mode {
		case "hang":
			select {
			case <-changed:
				continue // re-evaluate with the new mode
			case <-r.Context().Done():
				return // client went away
			case <-f.closing:
				// Shutting down: drop the connection without a response,
				// as a dying server would.
				panic(http.ErrAbortHandler)
			case <-deadline.C:
				http.Error(w, "dwepc-vcsim: hang cap reached", http.StatusGatewayTimeout)
				return
			}
		case "http500":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, "dwepc-vcsim: injected HTTP 500\n")
			return
		case "garbage":
			w.Header().Set("Content-Type", "text/xml; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, garbageBody)
			return
		case "flood", "huge", "elements":
			writeHostile(w, mode)
			return
		case "migratefail":
			if call.method == "RelocateVM_Task" || call.method == "MigrateVM_Task" {
				writeFailingMigration(w, call)
				return
			}
		case "noperm":
			// a user whose role lacks System.View / System.Read on the
			// VMs: vSphere refuses the performance queries with
			// NoPermission (HTTP 500, a SOAP fault naming the privilege)
			switch call.method {
			case "QueryPerf", "QueryPerfProviderSummary", "QueryAvailablePerfMetric":
				writeNoPermission(w, call)
				return
			}
		case "notauth":
			switch call.method {
			case "RetrieveServiceContent":
			case "Login":
				// Behave as if the server had forgotten the session: the
				// simulator rejects Login (InvalidLogin) on a request that
				// still carries a valid session cookie.
				r.Header.Del("Cookie")
			default:
				writeNotAuthenticated(w, call)
				return
			}
		}
		break // nothing (more) to inject: let the simulator answer
	}

	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	f.sim.ServeHTTP(rec, r)
	if rec.status == http.StatusOK {
		f.mu.Lock()
		switch call.method {
		case "Login":
			f.logins++
		case "Logout":
			f.logouts++
		}
		f.mu.Unlock()
	}
}

// writeFailingMigration answers a RelocateVM_Task / MigrateVM_Task with a
// real simulator task that ends in a MigrationFault (the "migratefail"
// fault): the VM stays where it is, as when vCenter refuses a vMotion.
func writeFailingMigration(w http.ResponseWriter, c soapCall) {
	ref := types.ManagedObjectReference{Type: c.thisType, Value: c.thisVal}
	obj := simulator.Map.Get(ref)
	if obj == nil {
		writeNotAuthenticated(w, c)
		return
	}
	task := simulator.CreateTask(obj, "relocateVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, &types.MigrationFault{}
	})
	moref := task.Run()
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><%sResponse xmlns="urn:vim25"><returnval type="Task">%s</returnval></%sResponse></soapenv:Body></soapenv:Envelope>`,
		c.method, moref.Value, c.method)
}

// garbageBody is served with HTTP 200 by the "garbage" fault: it starts like
// a SOAP envelope but is not well-formed XML.
const garbageBody = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><QueryPerfResponse xmlns="urn:vim25"><returnval><<&&garbage</soapenv:Body>
`

// soapCall is what the front end needs to know about a SOAP request.
type soapCall struct {
	method   string // local name of the first element inside soap Body
	thisType string // _this/@type
	thisVal  string // _this text
}

// parseSOAPCall extracts the method name and _this from a SOAP request.
// Errors leave the fields empty (the simulator reports them itself).
func parseSOAPCall(body []byte) soapCall {
	var c soapCall
	d := xml.NewDecoder(bytes.NewReader(body))
	inBody := false
	for {
		tok, err := d.Token()
		if err != nil {
			return c
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch {
		case !inBody:
			inBody = se.Name.Local == "Body" // skip Envelope/Header
		case c.method == "":
			c.method = se.Name.Local
		case se.Name.Local == "_this":
			var this struct {
				Type  string `xml:"type,attr"`
				Value string `xml:",chardata"`
			}
			if d.DecodeElement(&this, &se) == nil {
				c.thisType, c.thisVal = this.Type, strings.TrimSpace(this.Value)
			}
			return c
		default:
			return c // first child of the method is not _this
		}
	}
}

// writeNoPermission answers like vSphere does for a call the user's role
// does not allow: HTTP 500 with a SOAP NoPermission fault.
func writeNoPermission(w http.ResponseWriter, c soapCall) {
	writeFault(w, c, "NoPermission", "Permission to perform this operation was denied.")
}

// writeNotAuthenticated answers like vSphere does for a call without a valid
// session: HTTP 500 with a SOAP NotAuthenticated fault.
func writeNotAuthenticated(w http.ResponseWriter, c soapCall) {
	writeFault(w, c, "NotAuthenticated", "The session is not authenticated.")
}

// writeFault answers call c with HTTP 500 and a SOAP fault of type kind
// (System.View the privilege it names), as vSphere does.
func writeFault(w http.ResponseWriter, c soapCall, kind, message string) {
	var typ, val bytes.Buffer
	_ = xml.EscapeText(&typ, []byte(c.thisType))
	_ = xml.EscapeText(&val, []byte(c.thisVal))
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail><%sFault xmlns="urn:vim25" xsi:type="%s"><object type="%s">%s</object><privilegeId>System.View</privilegeId></%sFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`,
		message, kind, kind, typ.String(), val.String(), kind)
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

// tlsMaterial is the server's certificate chain and key.
type tlsMaterial struct {
	leafDER []byte // server certificate, signed by the CA
	caDER   []byte // CA certificate: what clients must trust (-cert-out)
	key     *ecdsa.PrivateKey
}

// newTLSMaterial generates a throw-away CA and a server certificate for
// 127.0.0.1, ::1 and localhost signed by it. (A separate CA keeps every TLS
// stack happy: webpki/rustls reject a CA certificate used as the server
// certificate, and OpenSSL is picky about self-signed leaves.)
func newTLSMaterial() (*tlsMaterial, error) {
	now := time.Now()
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		return n
	}

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "dwepc-vcsim test CA", Organization: []string{"dwepc tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "127.0.0.1", Organization: []string{"dwepc tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	return &tlsMaterial{leafDER: der, caDER: caDER, key: key}, nil
}

// encode serialises the material as PEM: server certificate, CA
// certificate, server key.
func (t *tlsMaterial) encode() ([]byte, error) {
	keyDER, err := x509.MarshalECPrivateKey(t.key)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: t.leafDER})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: t.caDER})
	_ = pem.Encode(&b, &pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	return b.Bytes(), nil
}

// decodeTLSMaterial parses what encode wrote.
func decodeTLSMaterial(data []byte) (*tlsMaterial, error) {
	t := new(tlsMaterial)
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE" && t.leafDER == nil:
			t.leafDER = block.Bytes
		case block.Type == "CERTIFICATE" && t.caDER == nil:
			t.caDER = block.Bytes
		case block.Type == "EC PRIVATE KEY":
			key, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, err
			}
			t.key = key
		}
	}
	if t.leafDER == nil || t.caDER == nil || t.key == nil {
		return nil, errors.New("incomplete TLS state (want server cert, CA cert, EC key)")
	}
	return t, nil
}

// loadOrCreateTLS returns the TLS material, reusing statePath when it exists
// (so a restarted server keeps its certificate) and saving it otherwise.
func loadOrCreateTLS(statePath string) (*tlsMaterial, error) {
	if statePath != "" {
		if data, err := ioutil.ReadFile(statePath); err == nil {
			return decodeTLSMaterial(data)
		} else if !os.IsNotExist(err) {
			return nil, err
		}
	}
	t, err := newTLSMaterial()
	if err != nil {
		return nil, err
	}
	if statePath != "" {
		data, err := t.encode()
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(statePath, data, 0600); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// config returns the server side tls.Config (HTTP/1.1 only).
func (t *tlsMaterial) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{
			Certificate: [][]byte{t.leafDER, t.caDER},
			PrivateKey:  t.key,
		}},
		NextProtos: []string{"http/1.1"},
	}
}

// caPEM returns the CA certificate in PEM, for -cert-out.
func (t *tlsMaterial) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: t.caDER})
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

// writeFileAtomic writes data to a temporary file next to path and renames it.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := ioutil.TempFile(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loopbackListen listens on addr after checking it is a loopback address.
func loopbackListen(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("-listen %s: only loopback addresses are allowed", addr)
		}
	}
	return net.Listen("tcp", addr)
}

// ---------------------------------------------------------------------------
// One port, two protocols (-tls)
// ---------------------------------------------------------------------------

// With -tls, the port accepts both TLS and plain HTTP: the first byte of a
// connection tells them apart (0x16 starts a TLS handshake record). Plain
// HTTP is only allowed for the /dwepc/ control endpoints, so that a test
// harness with no TLS stack can still drive them while /sdk stays HTTPS-only.

// sniffListener wraps accepted connections in sniffConn.
type sniffListener struct {
	net.Listener
	cfg *tls.Config
}

func (l *sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, cfg: l.cfg}, nil
}

// sniffConn decides on its first Read/Write (in the connection's own
// goroutine, so a silent client cannot stall Accept) whether it carries TLS.
type sniffConn struct {
	net.Conn // the raw TCP connection (deadlines, addresses)
	cfg      *tls.Config

	once  sync.Once
	mu    sync.Mutex
	inner net.Conn // *tls.Conn or *prefixConn once detected
	isTLS bool
	err   error
}

func (c *sniffConn) detect() (net.Conn, error) {
	c.once.Do(func() {
		var b [1]byte
		if _, err := io.ReadFull(c.Conn, b[:]); err != nil {
			c.err = err
			return
		}
		var inner net.Conn = &prefixConn{Conn: c.Conn, prefix: b[:]}
		if b[0] == 0x16 {
			inner = tls.Server(inner, c.cfg)
			c.isTLS = true
		}
		c.mu.Lock()
		c.inner = inner
		c.mu.Unlock()
	})
	return c.inner, c.err
}

func (c *sniffConn) Read(p []byte) (int, error) {
	inner, err := c.detect()
	if err != nil {
		return 0, err
	}
	return inner.Read(p)
}

func (c *sniffConn) Write(p []byte) (int, error) {
	inner, err := c.detect()
	if err != nil {
		return 0, err
	}
	return inner.Write(p)
}

func (c *sniffConn) Close() error {
	c.mu.Lock()
	inner := c.inner
	c.mu.Unlock()
	if inner != nil {
		return inner.Close()
	}
	return c.Conn.Close()
}

// plainHTTP reports whether the request arrived on a non-TLS connection of
// a -tls server (always false without -tls).
func plainHTTP(r *http.Request) bool {
	c, ok := r.Context().Value(connKey{}).(*sniffConn)
	if !ok {
		return false
	}
	c.detect() // already done: the request has been read
	return !c.isTLS
}

// connKey is the context key under which ConnContext stores the connection.
type connKey struct{}

// prefixConn replays bytes already read from the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

func main() {
	log.SetPrefix("dwepc-vcsim: ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	o := parseFlags()

	var specs []vmSpec
	if o.vmsFile != "" {
		var err error
		if specs, err = readVMSpecs(o.vmsFile); err != nil {
			log.Fatal(err)
		}
	}

	// Catch SIGTERM/SIGINT from the start, so that even an early signal
	// goes through the clean shutdown below (which removes temp files).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	simulator.Trace = o.trace
	simulator.SessionIdleTimeout = o.idleTimeout

	// Build the inventory. With -vms the model creates no VMs of its own
	// (Machine = 0) and, for VPX, no standalone host, so that the cluster's
	// pool is the only resource pool.
	m := simulator.VPX()
	if o.model == "esx" {
		m = simulator.ESX()
	}
	if o.vmsFile != "" {
		m.Machine = 0
		m.Host = o.standalone
	}
	var hostSpecs []hostSpec
	if o.hostsFile != "" {
		var err error
		if hostSpecs, err = readHostSpecs(o.hostsFile); err != nil {
			log.Fatal(err)
		}
		m.ClusterHost = len(hostSpecs)
	}
	if err := m.Create(); err != nil {
		log.Fatalf("model: %v", err)
	}
	defer m.Remove() // deletes the model's temporary datastore directories

	if len(hostSpecs) > 0 {
		if err := configureHosts(hostSpecs); err != nil {
			m.Remove()
			log.Fatalf("hosts: %v", err)
		}
	}
	if o.vmsFile != "" {
		if err := createVMs(m.Service, specs); err != nil {
			m.Remove()
			log.Fatalf("vms: %v", err)
		}
	}
	if err := installPerfManager(o); err != nil {
		m.Remove()
		log.Fatalf("perf manager: %v", err)
	}
	if err := installPagingCollector(); err != nil {
		m.Remove()
		log.Fatalf("property collector: %v", err)
	}

	ln, err := loopbackListen(o.listen)
	if err != nil {
		m.Remove()
		log.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	hostPort := net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))

	scheme := "http"
	var tlsConfig *tls.Config
	if o.tls {
		material, err := loadOrCreateTLS(o.tlsState)
		if err != nil {
			m.Remove()
			log.Fatalf("tls: %v", err)
		}
		tlsConfig = material.config()
		if o.certOut != "" {
			if err := writeFileAtomic(o.certOut, material.caPEM(), 0644); err != nil {
				m.Remove()
				log.Fatalf("-cert-out: %v", err)
			}
		}
		scheme = "https"
	}

	// Hook the simulator's Service up to our own http.Server instead of
	// Service.NewServer, so that the front end can wrap it. What NewServer
	// would do that matters: register the /sdk handler (RegisterSDK) and set
	// Service.Listen, whose User is what Login checks. A fresh Userinfo
	// (not simulator.DefaultLogin) makes Login accept only these credentials.
	svc := m.Service
	svc.Listen = &url.URL{Scheme: scheme, Host: hostPort, Path: "/sdk", User: url.UserPassword(o.user, o.pass)}
	svc.RegisterSDK(simulator.Map)
	svc.ServeMux.HandleFunc(simulator.Map.Path+"/vimServiceVersions.xml", svc.ServiceVersions)
	simulator.Map.SessionManager().ServiceHostName = hostPort

	front := newFrontend(svc.ServeMux)
	srv := &http.Server{
		Handler:           front,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(os.Stderr, "dwepc-vcsim http: ", log.LstdFlags),
	}
	if tlsConfig != nil {
		ln = &sniffListener{Listener: ln, cfg: tlsConfig}
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		}
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// Announce readiness.
	ready, _ := json.Marshal(struct {
		URL string `json:"url"`
		PID int    `json:"pid"`
	}{fmt.Sprintf("%s://%s/sdk", scheme, hostPort), os.Getpid()})
	fmt.Println(string(ready))
	if o.ready != "" {
		if err := writeFileAtomic(o.ready, append(ready, '\n'), 0644); err != nil {
			_ = srv.Close()
			m.Remove()
			log.Fatalf("-ready: %v", err)
		}
	}
	log.Printf("serving %s (%d VMs, refresh %ds, idle timeout %v)", ready, len(specs), o.refresh, o.idleTimeout)

	// Run until SIGTERM/SIGINT (or a fatal server error).
	select {
	case s := <-sigs:
		log.Printf("%v: shutting down", s)
	case err := <-served:
		log.Printf("server stopped: %v", err)
	}
	close(front.closing) // release requests held by the "hang" fault
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	_ = srv.Close()
}
