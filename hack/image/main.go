// Command image writes an OCI image archive of one static binary, without a
// container engine: the equivalent of the Dockerfile's final stage
// (distroless static:nonroot plus /docexec), reproducibly — the same binary
// gives the same digest, every timestamp is the epoch.
//
//	go run . -binary ../../bin/docexec-static -repo docker.io/docexec/docexec -o docexec.tar
//
// prints the image's name (repo:tag; the tag defaults to dev-<digest>) on
// stdout. Import the archive with `ctr -n k8s.io images import FILE`
// (hack/cluster.sh import does). The archive is an OCI layout in a tar whose
// index names the image in the io.containerd.image.name annotation.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is every timestamp in the image and the archive.
var epoch = time.Unix(0, 0).UTC()

type options struct {
	binary  string // the static program, installed at /<its base name> and run as the entrypoint
	repo    string // e.g. docker.io/docexec/docexec
	tag     string // empty: dev-<first 12 hex digits of the manifest digest>
	user    string // uid:gid the image runs as
	nonroot bool   // add distroless static:nonroot's files: passwd, group, CA bundle, /tmp, /home/nonroot
	caFile  string // the CA bundle copied to /etc/ssl/certs/ca-certificates.crt
	out     string // the archive to write
}

func main() {
	var o options
	flag.StringVar(&o.binary, "binary", "", "static binary to install at /<base name> as the entrypoint")
	flag.StringVar(&o.repo, "repo", "docker.io/docexec/docexec", "image repository")
	flag.StringVar(&o.tag, "tag", "", "image tag (default dev-<digest prefix>)")
	flag.StringVar(&o.user, "user", "65532:65532", "uid:gid the image runs as")
	flag.BoolVar(&o.nonroot, "nonroot", true, "add distroless static:nonroot's files (passwd, group, CA bundle, /tmp, /home/nonroot)")
	flag.StringVar(&o.caFile, "ca", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to install (with -nonroot)")
	flag.StringVar(&o.out, "o", "", "OCI archive to write")
	flag.Parse()
	log.SetFlags(0)
	if o.binary == "" || o.out == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	name, err := build(o)
	if err != nil {
		log.Fatalf("image: %v", err)
	}
	fmt.Println(name)
}

// build writes the archive and returns the image's name.
func build(o options) (string, error) {
	files, err := contents(o)
	if err != nil {
		return "", err
	}
	img, err := image(o, files)
	if err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("digest: %w", err)
	}
	tag := o.tag
	if tag == "" {
		tag = "dev-" + digest.Hex[:12]
	}
	name := o.repo + ":" + tag
	if err := writeArchive(img, name, tag, o.out); err != nil {
		return "", err
	}
	return name, nil
}

// file is one entry of the image's only layer.
type file struct {
	path     string // without a leading slash
	mode     int64  // permission bits; directories get tar.TypeDir
	uid, gid int
	dir      bool
	data     []byte
}

func contents(o options) ([]file, error) {
	bin, err := os.ReadFile(o.binary)
	if err != nil {
		return nil, fmt.Errorf("read the binary: %w", err)
	}
	files := []file{{path: filepath.Base(o.binary), mode: 0o755, data: bin}}
	if !o.nonroot {
		return files, nil
	}
	ca, err := os.ReadFile(o.caFile)
	if err != nil {
		return nil, fmt.Errorf("read the CA bundle: %w", err)
	}
	// The users and directories of distroless static:nonroot.
	return append(files,
		file{path: "etc", mode: 0o755, dir: true},
		file{path: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		file{path: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")},
		file{path: "etc/ssl", mode: 0o755, dir: true},
		file{path: "etc/ssl/certs", mode: 0o755, dir: true},
		file{path: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca},
		file{path: "home", mode: 0o755, dir: true},
		file{path: "home/nonroot", mode: 0o700, dir: true, uid: 65532, gid: 65532},
		file{path: "tmp", mode: 0o1777, dir: true},
	), nil
}

// layerTar is the layer's uncompressed tar, entries in path order.
func layerTar(files []file) ([]byte, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.path, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: epoch, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, f.path+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func image(o options, files []file) (v1.Image, error) {
	raw, err := layerTar(files)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "hack/image " + filepath.Base(o.binary)}})
	if err != nil {
		return nil, fmt.Errorf("append the layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = runtime.GOARCH, "linux"
	if arch := os.Getenv("GOARCH"); arch != "" {
		cfg.Architecture = arch
	}
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{"/" + filepath.Base(o.binary)}
	cfg.Config.User = o.user
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"}
	if o.nonroot {
		cfg.Config.Env = append(cfg.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
		cfg.Config.WorkingDir = "/home/nonroot"
	}
	if _, _, err := parseUser(o.user); err != nil {
		return nil, err
	}
	return mutate.ConfigFile(img, cfg)
}

// parseUser checks uid:gid: numeric, so that the kubelet can check
// runAsNonRoot without a passwd lookup.
func parseUser(s string) (int, int, error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("-user %q: want numeric uid:gid", s)
	}
	return uid, gid, nil
}

// writeArchive writes img as an OCI layout and packs it into a tar with
// fixed timestamps and owners.
func writeArchive(img v1.Image, name, tag, out string) error {
	dir, err := os.MkdirTemp("", "image-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write the layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return fmt.Errorf("write the image: %w", err)
	}
	return packDir(dir, out)
}

func packDir(dir, out string) error {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		paths = append(paths, path)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, path := range paths {
		if err := addFile(tw, dir, path); err != nil {
			f.Close()
			return fmt.Errorf("pack %s: %w", path, err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

func addFile(tw *tar.Writer, dir, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	rel, _ := filepath.Rel(dir, path)
	h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Mode: 0o644, Typeflag: tar.TypeReg, Size: st.Size()}
	if st.IsDir() {
		h.Name, h.Mode, h.Typeflag, h.Size = h.Name+"/", 0o755, tar.TypeDir, 0
		return tw.WriteHeader(h)
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = io.Copy(tw, src)
	return err
}
