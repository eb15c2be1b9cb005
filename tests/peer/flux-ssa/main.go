// Command flux-ssa is the agent benchmark's peer: what Flux's kustomize-controller does for each
// Kustomization, on Flux's own apply engine (github.com/fluxcd/pkg/ssa's ResourceManager), with
// kustomize-controller's defaults. It is our code; none of Flux's is copied: the engine, the
// status poller and kustomize come from their modules.
//
// Per App (one directory of the Git repository, like one Kustomization on one GitRepository):
// build the directory with kustomize (a generated kustomization.yaml listing its files, the
// target namespace set, as kustomize-controller generates one when the directory has none),
// normalize, set the ownership labels, ApplyAllStaged (GET, server-side dry-run apply, apply of
// what drifted), then with --wait the health check (WaitForSet, polled every 5 s, timeout = the
// interval). --concurrent Apps at a time (kustomize-controller's --concurrent, default 4), each
// with --concurrent-ssa appliers (its --concurrent-ssa, default 4), client QPS 50 / burst 300 (its
// --kube-api-qps/--kube-api-burst defaults). After a reconcile an App is queued again an interval
// later, as controller-runtime's RequeueAfter does. Drift is only corrected then: there is no
// watch on the applied objects, as in kustomize-controller.
//
// Left out, so the peer's request counts are a lower bound of Flux's: the Kustomization's and
// GitRepository's own status patches and events, source-controller's artifact (the harness reads
// a clone of the repository, fetched every interval), inventory garbage collection (nothing is
// ever removed in the benchmark).
//
// Each reconcile prints one JSON line on stdout, which the benchmark follows:
// {"app":"app0001","msg":"applied","changed":4,"ms":12} after the apply,
// {"app":"app0001","msg":"ready","ms":5003} after the health check, {"app":..,"msg":"failed",
// "error":..} on an error.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/normalize"
	ssautil "github.com/fluxcd/pkg/ssa/utils"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// What kustomize-controller names itself: the field manager of its applies, and the group of its
// ownership labels (kustomize.toolkit.fluxcd.io/name, .../namespace).
const (
	fieldManager = "kustomize-controller"
	ownerGroup   = "kustomize.toolkit.fluxcd.io"
	// The namespace the Kustomization objects would live in: it goes into the ownership labels.
	kustomizationNamespace = "flux-system"
)

type options struct {
	kubeconfig    string
	repo          string
	path          string
	namespace     string
	interval      time.Duration
	concurrent    int
	concurrentSSA int
	wait          bool
}

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

func emit(fields map[string]any) {
	out.Lock()
	defer out.Unlock()
	_ = out.enc.Encode(fields)
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the target cluster")
	flag.StringVar(&o.repo, "repo", "", "Git URL of the repository holding the Apps")
	flag.StringVar(&o.path, "path", "apps", "directory of the repository with one subdirectory per App")
	flag.StringVar(&o.namespace, "namespace", "", "target namespace of every App (a Kustomization's targetNamespace)")
	flag.DurationVar(&o.interval, "interval", 10*time.Minute, "reconcile interval of every App")
	flag.IntVar(&o.concurrent, "concurrent", 4, "Apps reconciled at a time (kustomize-controller's --concurrent)")
	flag.IntVar(&o.concurrentSSA, "concurrent-ssa", 4, "concurrent applies per App (kustomize-controller's --concurrent-ssa)")
	flag.BoolVar(&o.wait, "wait", false, "health-check every applied object (a Kustomization's spec.wait)")
	flag.Parse()
	if o.repo == "" || o.namespace == "" {
		fmt.Fprintln(os.Stderr, "flux-ssa: --repo and --namespace are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "flux-ssa: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 300
	cfg.UserAgent = "flux-ssa-peer"
	kube, poller, err := clients(cfg)
	if err != nil {
		return err
	}

	checkout, err := os.MkdirTemp("", "flux-ssa-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(checkout)
	if err := git("", "clone", "--quiet", o.repo, checkout); err != nil {
		return err
	}
	apps, err := listApps(filepath.Join(checkout, o.path))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "flux-ssa: %d Apps from %s, interval %s, %d at a time\n", len(apps), o.repo, o.interval, o.concurrent)

	// The source: fetched every interval, like a GitRepository; an unchanged fetch changes no file.
	var source sync.RWMutex
	go func() {
		t := time.NewTicker(o.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				source.Lock()
				if err := git(checkout, "pull", "--quiet", "--ff-only"); err != nil {
					fmt.Fprintf(os.Stderr, "flux-ssa: fetch: %v\n", err)
				}
				source.Unlock()
			}
		}
	}()

	// The work queue: every App at start, then each again an interval after its reconcile ended.
	queue := make(chan string, len(apps))
	for _, a := range apps {
		queue <- a
	}
	var wg sync.WaitGroup
	for w := 0; w < o.concurrent; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case app := <-queue:
					source.RLock()
					reconcile(ctx, o, kube, poller, filepath.Join(checkout, o.path, app), app)
					source.RUnlock()
					time.AfterFunc(o.interval, func() {
						if ctx.Err() == nil {
							queue <- app
						}
					})
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// clients builds what kustomize-controller's reconciler holds: a controller-runtime client
// (unstructured objects are read from the API server, not a cache) and kstatus's status poller
// with its default caching cluster reader.
func clients(cfg *rest.Config) (client.Client, *polling.StatusPoller, error) {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, nil, err
	}
	kube, err := client.New(cfg, client.Options{HTTPClient: httpClient, Mapper: mapper})
	if err != nil {
		return nil, nil, err
	}
	return kube, polling.NewStatusPoller(kube, mapper, polling.Options{}), nil
}

func reconcile(ctx context.Context, o options, kube client.Client, poller *polling.StatusPoller, dir, app string) {
	fail := func(err error) {
		emit(map[string]any{"app": app, "msg": "failed", "error": err.Error()})
	}
	started := time.Now()
	objects, err := build(dir, o.namespace)
	if err != nil {
		fail(err)
		return
	}
	if err := normalize.UnstructuredList(objects); err != nil {
		fail(err)
		return
	}
	manager := ssa.NewResourceManager(kube, poller, ssa.Owner{Field: fieldManager, Group: ownerGroup})
	manager.SetOwnerLabels(objects, app, kustomizationNamespace)
	manager.SetConcurrency(o.concurrentSSA)

	// kustomize-controller's options for a Kustomization without spec.force: the defaults and
	// its selectors (reconcile: disabled, ssa: ignore / ifNotPresent, force: enabled).
	opts := ssa.DefaultApplyOptions()
	opts.ExclusionSelector = map[string]string{
		ownerGroup + "/reconcile": "disabled",
		ownerGroup + "/ssa":       "ignore",
	}
	opts.IfNotPresentSelector = map[string]string{ownerGroup + "/ssa": "IfNotPresent"}
	opts.ForceSelector = map[string]string{ownerGroup + "/force": "enabled"}
	changeSet, err := manager.ApplyAllStaged(ctx, objects, opts)
	if err != nil {
		fail(err)
		return
	}
	changed := 0
	for _, e := range changeSet.Entries {
		if e.Action == ssa.CreatedAction || e.Action == ssa.ConfiguredAction {
			changed++
		}
	}
	emit(map[string]any{"app": app, "msg": "applied", "changed": changed, "ms": time.Since(started).Milliseconds()})

	if !o.wait {
		return
	}
	// The health check of spec.wait: every applied object, polled every 5 s, timeout the
	// Kustomization's (its interval when spec.timeout is unset).
	if err := manager.WaitForSetWithContext(ctx, changeSet.ToObjMetadataSet(), ssa.WaitOptions{
		Interval: 5 * time.Second,
		Timeout:  o.interval,
	}); err != nil {
		fail(err)
		return
	}
	emit(map[string]any{"app": app, "msg": "ready", "ms": time.Since(started).Milliseconds()})
}

// build runs kustomize on the App's directory in memory: a kustomization.yaml listing its YAML
// files with the target namespace, then krusty with kustomize-controller's build options (no
// plugins, no load restrictions). The checkout is never written to.
func build(dir, namespace string) ([]*unstructured.Unstructured, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fs := filesys.MakeFsInMemory()
	var resources []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if err := fs.WriteFile("/app/"+name, data); err != nil {
			return nil, err
		}
		resources = append(resources, name)
	}
	sort.Strings(resources)
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: " + namespace + "\nresources:\n"
	for _, r := range resources {
		k += "- " + r + "\n"
	}
	if err := fs.WriteFile("/app/kustomization.yaml", []byte(k)); err != nil {
		return nil, err
	}
	buildOptions := &krusty.Options{
		LoadRestrictions: kustypes.LoadRestrictionsNone,
		PluginConfig:     kustypes.DisabledPluginConfig(),
	}
	resMap, err := krusty.MakeKustomizer(buildOptions).Run(fs, "/app")
	if err != nil {
		return nil, err
	}
	yaml, err := resMap.AsYaml()
	if err != nil {
		return nil, err
	}
	return ssautil.ReadObjects(bytes.NewReader(yaml))
}

func listApps(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var apps []string
	for _, e := range entries {
		if e.IsDir() {
			apps = append(apps, e.Name())
		}
	}
	sort.Strings(apps)
	if len(apps) == 0 {
		return nil, fmt.Errorf("no App directories in %s", dir)
	}
	return apps, nil
}

func git(dir string, args ...string) error {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
