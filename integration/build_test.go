package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"
)

const (
	// harnessLabel marks every image, container, volume and network the harness creates, so
	// that leftovers of a killed run can be found: docker ps -a --filter label=<harnessLabel>.
	harnessLabel = "org.jetagent.integration"
	// contentLabel holds the full content hash (Dockerfile and files) of an image built here.
	// An image is reused only when its tag exists and this label matches.
	contentLabel = "org.jetagent.integration.content"

	// natsServerPackage is built at the version go.mod pins.
	natsServerPackage = "github.com/nats-io/nats-server/v2"
	// natsRepository is the NATS image's name; its tag is the binary's content hash.
	natsRepository = "jetagent-nats"

	// buildTimeout bounds one go build plus one image build.
	buildTimeout = 10 * time.Minute
)

// natsDockerfile is the NATS image's recipe: the static binary and nothing else.
//
//go:embed docker/Dockerfile.nats
var natsDockerfile []byte

var (
	natsImageOnce = sync.OnceValues(buildNATSImage)
	imageBuilds   onceMap[builtImage]
	hostBuilds    onceMap[string]
	moduleRoot    = sync.OnceValues(findModuleRoot)
)

// builtImage is the outcome of making sure an image exists.
type builtImage struct {
	ref string // repository:tag
	how string // what it took, for the test log: "go build 1.2s, image reused", ...
}

// natsImage returns the reference of a FROM scratch image holding a static nats-server built
// from the module go.mod pins, tagged jetagent-nats:<first 12 hex of the binary's sha256>.
// It does the work once per process: go build (quick once the Go build cache has the
// packages), then an image build only when the engine has no image with that tag and
// content. When go.mod, go.sum, the toolchain and the build settings are those of an earlier
// run whose image still exists, even the go build is skipped.
func natsImage(t testing.TB) string {
	t.Helper()
	img, err := natsImageOnce()
	if err != nil {
		t.Fatalf("NATS image: %v", err)
	}
	t.Logf("NATS image %s (%s)", img.ref, img.how)
	return img.ref
}

func buildNATSImage() (builtImage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	// Fast path: the binary is a pure function of go.mod, go.sum, the toolchain and the build
	// settings (builds are reproducible), so when none of them changed since an earlier run
	// built the image, that image is still right and the go build can be skipped.
	stamp, stampErr := natsStampPath()
	if stampErr == nil {
		if ref, err := os.ReadFile(stamp); err == nil && imageIsCurrent(ctx, string(ref)) {
			return builtImage{ref: string(ref), how: "go.mod and toolchain unchanged: image reused"}, nil
		}
	}

	dir, err := buildDir("nats")
	if err != nil {
		return builtImage{}, err
	}
	defer os.RemoveAll(dir)

	started := time.Now()
	bin := filepath.Join(dir, "nats-server")
	if err := goBuild(ctx, natsServerPackage, bin, staticLinuxBuild); err != nil {
		return builtImage{}, err
	}
	goBuilt := took(started)
	sum, err := fileSHA256(bin)
	if err != nil {
		return builtImage{}, err
	}
	img, err := ensureImage(ctx, imageSpec{
		repository: natsRepository,
		tag:        sum[:12],
		dockerfile: natsDockerfile,
		files:      []contextFile{{name: "nats-server", hostPath: bin, sum: sum}},
	})
	if err != nil {
		return builtImage{}, err
	}
	img.how = fmt.Sprintf("go build %s, %s", goBuilt, img.how)
	if stampErr == nil {
		if err := writeFileAtomic(stamp, []byte(img.ref)); err != nil {
			return builtImage{}, err
		}
	}
	return img, nil
}

// natsStampPath names the file that remembers which image the current go.mod, go.sum,
// toolchain and build settings gave. It fails when go.mod has a replace directive: the
// replaced code may change with go.mod unchanged, so every run must build.
func natsStampPath() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, name := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			return "", err
		}
		if name == "go.mod" && hasReplace(b) {
			return "", errors.New("go.mod replaces modules")
		}
		fmt.Fprintf(h, "%s %d\n%s\n", name, len(b), b)
	}
	fmt.Fprintf(h, "%s %s/linux/%s\n%s\n", natsServerPackage, runtime.Version(), runtime.GOARCH, natsDockerfile)
	for _, env := range []string{"GOFLAGS", "GOEXPERIMENT", "GOAMD64", "GOARM64", "GOARM", "GOTOOLCHAIN", "GOROOT"} {
		fmt.Fprintf(h, "%s=%s\n", env, os.Getenv(env))
	}
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "nats-image-"+hex.EncodeToString(h.Sum(nil))[:16]+".ref"), nil
}

// hasReplace tells whether a go.mod has a replace directive.
func hasReplace(gomod []byte) bool {
	for line := range strings.Lines(string(gomod)) {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "replace" || strings.HasPrefix(f[0], "replace(")) {
			return true
		}
	}
	return false
}

// imageIsCurrent tells whether the engine has ref, built by ensureImage.
func imageIsCurrent(ctx context.Context, ref string) bool {
	cli, err := dockerClient()
	if err != nil || ref == "" {
		return false
	}
	img, err := cli.ImageInspect(ctx, ref)
	return err == nil && img.Config != nil && img.Config.Labels[contentLabel] != ""
}

// writeFileAtomic writes name through a temporary file and a rename, so that a concurrent
// reader sees the old content or the new, never a part.
func writeFileAtomic(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), filepath.Base(name)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// took formats the time since start for the test log.
func took(start time.Time) time.Duration {
	return time.Since(start).Round(100 * time.Millisecond)
}

// buildImage returns the reference of a FROM scratch image holding static Linux builds of
// this repository's packages: binaries maps a path in the image ("/agent") to a package, as
// an import path or relative to the module root ("./cmd/agent"). The image also has an empty
// /tmp. With exactly one binary it is the ENTRYPOINT; with several there is none, and the
// container request names one (testcontainers.WithEntrypoint). The tag is name:<first 12 hex
// of the content hash>, so an unchanged build reuses the image already in the engine.
// It is built once per process for the same name and binaries.
func buildImage(t testing.TB, name string, binaries map[string]string) string {
	t.Helper()
	paths := slices.Sorted(maps.Keys(binaries))
	key := name
	for _, p := range paths {
		key += "\x00" + p + "=" + binaries[p]
	}
	img, err := imageBuilds.do(key, func() (builtImage, error) {
		return buildBinariesImage(name, paths, binaries)
	})
	if err != nil {
		t.Fatalf("image %s: %v", name, err)
	}
	t.Logf("image %s (%s)", img.ref, img.how)
	return img.ref
}

func buildBinariesImage(name string, paths []string, binaries map[string]string) (builtImage, error) {
	if name == "" || len(paths) == 0 {
		return builtImage{}, errors.New("buildImage needs a name and at least one binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	dir, err := buildDir("image")
	if err != nil {
		return builtImage{}, err
	}
	defer os.RemoveAll(dir)

	started := time.Now()
	var dockerfile bytes.Buffer
	dockerfile.WriteString("FROM scratch\nCOPY tmp /tmp\n")
	files := []contextFile{{name: "tmp", dir: true}}
	for i, imagePath := range paths {
		if !path.IsAbs(imagePath) || path.Clean(imagePath) != imagePath || imagePath == "/" {
			return builtImage{}, fmt.Errorf("path in image %q: want a clean absolute path", imagePath)
		}
		contextName := fmt.Sprintf("bin/%d", i)
		hostPath := filepath.Join(dir, filepath.FromSlash(contextName))
		if err := goBuild(ctx, binaries[imagePath], hostPath, staticLinuxBuild); err != nil {
			return builtImage{}, err
		}
		sum, err := fileSHA256(hostPath)
		if err != nil {
			return builtImage{}, err
		}
		files = append(files, contextFile{name: contextName, hostPath: hostPath, sum: sum})
		fmt.Fprintf(&dockerfile, "COPY %s\n", jsonArray(contextName, imagePath))
	}
	if len(paths) == 1 {
		fmt.Fprintf(&dockerfile, "ENTRYPOINT %s\n", jsonArray(paths[0]))
	}
	goBuilt := took(started)
	img, err := ensureImage(ctx, imageSpec{
		repository: name,
		dockerfile: dockerfile.Bytes(),
		files:      files,
	})
	if err != nil {
		return builtImage{}, err
	}
	img.how = fmt.Sprintf("go build %s, %s", goBuilt, img.how)
	return img, nil
}

// buildHostBinary builds a package of this repository (import path or "./cmd/agent") for the
// host, to run as a real OS process, and returns the executable's path. It is built once per
// process into a folder of the cache directory keyed by module root and package, replaced
// atomically, so that concurrent test processes never see a half-written file.
func buildHostBinary(t testing.TB, pkg string) string {
	t.Helper()
	bin, err := hostBuilds.do(pkg, func() (string, error) { return buildHost(pkg) })
	if err != nil {
		t.Fatalf("host binary %s: %v", pkg, err)
	}
	return bin
}

func buildHost(pkg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	key := sha256.Sum256([]byte(root + "\x00" + pkg))
	dir := filepath.Join(cache, "host", hex.EncodeToString(key[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	name := binaryName(pkg)
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d.tmp", name, os.Getpid()))
	if err := goBuild(ctx, pkg, tmp, hostBuild); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	bin := filepath.Join(dir, name)
	if err := os.Rename(tmp, bin); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return bin, nil
}

// binaryName names the executable of a package the way go build does: its last path element,
// or the one before a major version suffix (".../nats-server/v2" -> "nats-server").
func binaryName(pkg string) string {
	p := strings.TrimSuffix(filepath.ToSlash(pkg), "/")
	base := path.Base(p)
	if len(base) > 1 && base[0] == 'v' && strings.Trim(base[1:], "0123456789") == "" {
		base = path.Base(path.Dir(p))
	}
	if base == "." || base == "/" || base == ".." {
		return "main"
	}
	return base
}

// goBuildMode is how goBuild compiles: both modes are static (CGO_ENABLED=0) and -trimpath, so
// the same source gives the same bytes wherever the repository is checked out.
type goBuildMode int

const (
	staticLinuxBuild goBuildMode = iota // GOOS=linux, stripped (-s -w): for images
	hostBuild                           // the host's GOOS, with symbols: for processes
)

// goBuild compiles pkg into out with the go command that runs the tests (go test puts its
// GOROOT/bin first on PATH), from the module root so go.mod decides every version.
func goBuild(ctx context.Context, pkg, out string, mode goBuildMode) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-o", out}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if mode == staticLinuxBuild {
		args = append(args, "-ldflags=-s -w")
		env = append(env, "GOOS=linux")
	}
	args = append(args, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, output)
	}
	return nil
}

// findModuleRoot walks up from the working directory (the package folder under go test) to
// the folder holding go.mod.
func findModuleRoot() (string, error) {
	start, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := start; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod in %s or above", start)
		}
	}
}

// cacheDir is where builds go: outside the repository, shared by test processes.
func cacheDir() (string, error) {
	dir := filepath.Join(os.TempDir(), "jetagent-integration-cache")
	return dir, os.MkdirAll(dir, 0o755)
}

// buildDir makes a private folder in the cache directory for one image build's context.
func buildDir(prefix string) (string, error) {
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	return os.MkdirTemp(cache, prefix+"-*")
}

// imageSpec is a FROM scratch image to build from files on the host.
type imageSpec struct {
	repository string
	tag        string // empty: the first 12 hex of the content hash
	dockerfile []byte
	files      []contextFile
}

// contextFile is one entry of an image's build context.
type contextFile struct {
	name     string // slash-separated path in the build context
	hostPath string
	sum      string // hex sha256 of the file
	dir      bool   // an empty directory (hostPath and sum unused)
}

// contentHash covers everything that goes into the image: the Dockerfile and each file's
// name and content.
func (s imageSpec) contentHash() string {
	h := sha256.New()
	fmt.Fprintf(h, "dockerfile %d\n", len(s.dockerfile))
	h.Write(s.dockerfile)
	for _, f := range s.files {
		fmt.Fprintf(h, "\nfile %q dir=%t %s", f.name, f.dir, f.sum)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ensureImage builds the image unless the engine already has its tag with the same content.
// A lock file in the cache directory serialises this between test processes, so two
// processes never build the same tag at once (the second one waits, then reuses).
func ensureImage(ctx context.Context, spec imageSpec) (builtImage, error) {
	cli, err := dockerClient()
	if err != nil {
		return builtImage{}, err
	}
	content := spec.contentHash()
	tag := spec.tag
	if tag == "" {
		tag = content[:12]
	}
	ref := spec.repository + ":" + tag

	cache, err := cacheDir()
	if err != nil {
		return builtImage{}, err
	}
	unlock, err := lockFile(ctx, filepath.Join(cache, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".lock"))
	if err != nil {
		return builtImage{}, fmt.Errorf("lock image build %s: %w", ref, err)
	}
	defer unlock()

	var staleID string
	existing, err := cli.ImageInspect(ctx, ref)
	switch {
	case err == nil && existing.Config != nil && existing.Config.Labels[contentLabel] == content:
		return builtImage{ref: ref, how: "image reused"}, nil
	case err == nil:
		staleID = existing.ID // same tag, other content: the Dockerfile changed
	case !cerrdefs.IsNotFound(err):
		return builtImage{}, fmt.Errorf("inspect image %s: %w", ref, err)
	}

	started := time.Now()
	var buildContext bytes.Buffer
	if err := writeBuildContext(&buildContext, spec); err != nil {
		return builtImage{}, fmt.Errorf("build context for %s: %w", ref, err)
	}
	resp, err := cli.ImageBuild(ctx, &buildContext, client.ImageBuildOptions{
		Tags:        []string{ref},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{harnessLabel: "true", contentLabel: content},
		// The classic builder needs nothing but the engine's API; BuildKit would need a
		// session, and the docker CLI may have no buildx plugin (this machine has none).
		Version: build.BuilderV1,
	})
	if err != nil {
		return builtImage{}, fmt.Errorf("build image %s: %w", ref, err)
	}
	defer resp.Body.Close()
	var buildLog bytes.Buffer
	if err := jsonmessage.DisplayStream(resp.Body, &buildLog); err != nil {
		return builtImage{}, fmt.Errorf("build image %s: %w\n%s", ref, err, buildLog.String())
	}
	if staleID != "" {
		// Best effort: the old image lost its tag; it stays if a container still uses it.
		_, _ = cli.ImageRemove(ctx, staleID, client.ImageRemoveOptions{})
	}
	return builtImage{ref: ref, how: fmt.Sprintf("image built in %s", took(started))}, nil
}

// writeBuildContext writes the Dockerfile and the files as a tar stream. Every entry has the
// same owner and modification time, so the layers depend only on the content.
func writeBuildContext(w io.Writer, spec imageSpec) error {
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{
		Name: "Dockerfile", Mode: 0o644, Size: int64(len(spec.dockerfile)), ModTime: epoch,
	}); err != nil {
		return err
	}
	if _, err := tw.Write(spec.dockerfile); err != nil {
		return err
	}
	for _, f := range spec.files {
		if f.dir {
			if err := tw.WriteHeader(&tar.Header{
				Name: f.name + "/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: epoch,
			}); err != nil {
				return err
			}
			continue
		}
		if err := writeTarFile(tw, f.name, f.hostPath, epoch); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeTarFile(tw *tar.Writer, name, hostPath string, modTime time.Time) error {
	file, err := os.Open(hostPath)
	if err != nil {
		return err
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{
		Name: name, Mode: 0o755, Size: info.Size(), ModTime: modTime,
	}); err != nil {
		return err
	}
	_, err = io.Copy(tw, file)
	return err
}

func fileSHA256(name string) (string, error) {
	file, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer file.Close()
	h := sha256.New()
	if _, err := io.Copy(h, file); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// jsonArray renders a Dockerfile exec-form argument list.
func jsonArray(items ...string) string {
	b, _ := json.Marshal(items) // a []string always marshals
	return string(b)
}

// onceMap runs a function once per key for the whole process and remembers its result,
// errors included: a build that failed once is not retried by every later test.
type onceMap[T any] struct {
	mu    sync.Mutex
	cells map[string]*onceCell[T]
}

type onceCell[T any] struct {
	once sync.Once
	val  T
	err  error
}

func (m *onceMap[T]) do(key string, f func() (T, error)) (T, error) {
	m.mu.Lock()
	if m.cells == nil {
		m.cells = make(map[string]*onceCell[T])
	}
	c, ok := m.cells[key]
	if !ok {
		c = &onceCell[T]{}
		m.cells[key] = c
	}
	m.mu.Unlock()
	c.once.Do(func() { c.val, c.err = f() })
	return c.val, c.err
}
