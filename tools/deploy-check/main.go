// Command deploy-check runs the offline checks behind scripts/validate-deploy.sh
// that need the same Go libraries the real tools use:
//
//	deploy-check compose  FILE [--env-file F]... [--require-env-file]
//	    loads FILE with compose-go, the loader inside `docker compose`: schema,
//	    interpolation, references to undefined services, volumes, networks,
//	    secrets and configs, and env_file paths. Then checks the images: no image
//	    is built by more than one service (two builds of one tag collide under
//	    the containerd image store and bake), a service that runs an image
//	    another service builds never pulls it (pull_policy: never), and every
//	    image pulled from a registry is pinned to a full version (x.y.z) or a
//	    digest. Prints the resolved project as JSON on stdout so the caller can
//	    make further assertions.
//	deploy-check dockerfile FILE [--allow-env NAME]...
//	    runs BuildKit's Dockerfile checks (the rules behind `docker build --check`)
//	    on every stage. Base images are not fetched: each FROM image is given an
//	    empty linux/amd64 config, so rules that need a real image are not run.
//	    SecretsUsedInArgOrEnv is run here with an allow-list instead: the
//	    Dockerfile skips that rule because it matches every `AUTH__*` setting,
//	    so this check applies the same pattern to ARG and ENV names and accepts
//	    only the names given with --allow-env.
//	deploy-check stages FILE
//	    parses FILE with BuildKit's parser and prints its stages as JSON, for the
//	    caller's own rules: {"stage": [["FROM", "base"], ["INSTRUCTION",
//	    "arguments as written, continuation lines joined"], ...], ...}.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: deploy-check compose FILE [--env-file F]... | deploy-check dockerfile FILE | deploy-check stages FILE")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "compose":
		err = checkCompose(os.Args[2:])
	case "dockerfile":
		err = checkDockerfile(os.Args[2:])
	case "stages":
		err = printStages(os.Args[2])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy-check:", err)
		os.Exit(1)
	}
}

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func checkCompose(args []string) error {
	fs := flag.NewFlagSet("compose", flag.ContinueOnError)
	var envFiles stringList
	fs.Var(&envFiles, "env-file", "project env file (like `docker compose --env-file`); none means no .env at all")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	file, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	// The process environment is left out on purpose: the result must not depend
	// on what happens to be exported in the shell or on the CI machine.
	opts := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithName("validate"),
		cli.WithResolvedPaths(true),
	}
	if len(envFiles) > 0 {
		opts = append(opts, cli.WithEnvFiles(envFiles...), cli.WithDotEnv)
	}
	po, err := cli.NewProjectOptions([]string{file}, opts...)
	if err != nil {
		return err
	}
	project, err := po.LoadProject(context.Background())
	if err != nil {
		return err
	}
	if problems := imageProblems(project.Services); len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	out, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}

// pinnedTag is a tag that names one release: x.y.z, optionally followed by a
// variant (4.2.5-management).
var pinnedTag = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([-_.][A-Za-z0-9_.-]+)?$`)

// imageProblems lists what is wrong with the services' images, in service
// order: an image built by two services, a service that would try to pull an
// image only this project builds, an image from a registry without a pinned
// version.
func imageProblems(services types.Services) []string {
	names := make([]string, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	slices.Sort(names)
	builders := map[string][]string{}
	for _, name := range names {
		svc := services[name]
		if svc.Build != nil && svc.Image != "" {
			builders[svc.Image] = append(builders[svc.Image], name)
		}
	}
	var problems []string
	for _, name := range names {
		svc := services[name]
		switch {
		case svc.Build != nil:
			if others := builders[svc.Image]; len(others) > 1 && others[0] == name {
				problems = append(problems, fmt.Sprintf("image %s is built by %d services (%s): build it in one and give the others `image:` and `pull_policy: never`",
					svc.Image, len(others), strings.Join(others, ", ")))
			}
		case len(builders[svc.Image]) > 0:
			if svc.PullPolicy != types.PullPolicyNever {
				problems = append(problems, fmt.Sprintf("%s runs %s, which %s builds, without `pull_policy: never`: compose would try to pull it from a registry",
					name, svc.Image, builders[svc.Image][0]))
			}
		default:
			if !pinned(svc.Image) {
				problems = append(problems, fmt.Sprintf("%s: image %q is not pinned to a release (x.y.z) or a digest", name, svc.Image))
			}
		}
	}
	return problems
}

// pinned reports whether image names one release: a digest, or a tag x.y.z.
func pinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon <= slash {
		return false
	}
	return pinnedTag.MatchString(image[colon+1:])
}

// emptyImages answers every base-image lookup with an empty linux/amd64 image,
// so the checks run without a registry.
type emptyImages struct{}

func (emptyImages) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	cfg := ocispecs.Image{
		Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"},
		Config:   ocispecs.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	}
	dt, err := json.Marshal(cfg)
	if err != nil {
		return "", "", nil, err
	}
	return ref, digest.FromBytes(dt), dt, nil
}

func checkDockerfile(args []string) error {
	fs := flag.NewFlagSet("dockerfile", flag.ContinueOnError)
	var allowEnv stringList
	fs.Var(&allowEnv, "allow-env", "an ARG/ENV name that looks secret but is not")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	path := args[0]
	dt, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	problems := secretLookingNames(path, dt, allowEnv)
	ctx := context.Background()
	amd64 := ocispecs.Platform{OS: "linux", Architecture: "amd64"}
	src := llb.Local("dockerfile")
	def, err := src.Marshal(ctx)
	if err != nil {
		return err
	}
	smap := llb.NewSourceMap(&src, path, "Dockerfile", dt)
	smap.Definition = def
	res, err := dockerfile2llb.DockerfileLint(ctx, dt, dockerfile2llb.ConvertOpt{
		Config:         dockerui.Config{BuildPlatforms: []ocispecs.Platform{amd64}},
		SourceMap:      smap,
		TargetPlatform: &amd64,
		MetaResolver:   emptyImages{},
	})
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		fmt.Printf("%s:%d: %s: %s\n", path, line, w.RuleName, w.Detail)
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if res.Error != nil {
		return errors.New(res.Error.Message)
	}
	if n := len(res.Warnings) + len(problems); n > 0 {
		return fmt.Errorf("%d Dockerfile check warning(s)", n)
	}
	return nil
}

// Same tokens as BuildKit's SecretsUsedInArgOrEnv rule.
var (
	secretName  = regexp.MustCompile(`(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`)
	allowedName = regexp.MustCompile(`(?i)(?:_|^)(?:public|file|version)(?:_|$)`)
)

func secretLookingNames(path string, dt []byte, allow []string) []string {
	ast, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", path, err)}
	}
	stages, metaArgs, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", path, err)}
	}
	var out []string
	check := func(kind, key string, loc []parser.Range) {
		if secretName.MatchString(key) && !allowedName.MatchString(key) && !slices.Contains(allow, key) {
			line := 0
			if len(loc) > 0 {
				line = loc[0].Start.Line
			}
			out = append(out, fmt.Sprintf("%s:%d: SecretsUsedInArgOrEnv: %s %q looks like a secret; pass secrets at run time", path, line, kind, key))
		}
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			check("ARG", kv.Key, a.Location())
		}
	}
	for _, st := range stages {
		for _, cmd := range st.Commands {
			switch c := cmd.(type) {
			case *instructions.EnvCommand:
				for _, kv := range c.Env {
					check("ENV", kv.Key, c.Location())
				}
			case *instructions.ArgCommand:
				for _, kv := range c.Args {
					check("ARG", kv.Key, c.Location())
				}
			}
		}
	}
	return out
}

// printStages prints the stages of a Dockerfile as BuildKit reads them.
func printStages(path string) error {
	dt, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	ast, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return err
	}
	stages, _, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		return err
	}
	out := map[string][][2]string{}
	for i, st := range stages {
		name := st.Name
		if name == "" {
			name = fmt.Sprintf("stage-%d", i)
		}
		instrs := [][2]string{{"FROM", st.BaseName}}
		for _, cmd := range st.Commands {
			code := fmt.Sprint(cmd)
			_, args, _ := strings.Cut(strings.TrimSpace(code), " ")
			instrs = append(instrs, [2]string{strings.ToUpper(cmd.Name()), strings.TrimSpace(args)})
		}
		out[name] = instrs
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
