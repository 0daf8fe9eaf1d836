package main

// The example's own test, run as its users run it: ./run on a repaired export must print the expected ids, and
// on the unrepaired export it must fail with onnxruntime's error. The expected ids come from the Python
// reference client (examples/python), which go test cannot run, so the caller passes them:
//
//	GRAPHFIX_EXAMPLE_REPAIRED=DIR GRAPHFIX_EXAMPLE_ORIGINAL=DIR GRAPHFIX_EXAMPLE_EXPECTED="95 88 ..." go test
//
// Optional: GRAPHFIX_EXAMPLE_IDS (source ids, default the run's own), GRAPHFIX_EXAMPLE_MAX_NEW_TOKENS.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func requiredEnv(t *testing.T, name string) string {
	t.Helper()
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set: this test needs GRAPHFIX_EXAMPLE_REPAIRED (a repaired export folder), "+
			"GRAPHFIX_EXAMPLE_EXPECTED (its ids from examples/python/greedy_decode.py) and "+
			"GRAPHFIX_EXAMPLE_ORIGINAL (the unrepaired export)", name)
	}
	return value
}

// runExample runs ./run on modelDir and returns its exit code, its last stdout line and its stderr.
func runExample(t *testing.T, modelDir string) (int, string, string) {
	t.Helper()
	args := []string{}
	if limit := os.Getenv("GRAPHFIX_EXAMPLE_MAX_NEW_TOKENS"); limit != "" {
		args = append(args, "--max-new-tokens", limit)
	}
	args = append(args, modelDir)
	args = append(args, strings.Fields(os.Getenv("GRAPHFIX_EXAMPLE_IDS"))...)
	var stdout, stderr bytes.Buffer
	command := exec.Command("./run", args...)
	command.Stdout, command.Stderr = &stdout, &stderr
	err := command.Run()
	code := 0
	if exit, failed := err.(*exec.ExitError); failed {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("cannot start ./run: %v", err)
	}
	lines := strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
	return code, lines[len(lines)-1], stderr.String()
}

func TestRepairedExportDecodesLikeThePythonReference(t *testing.T) {
	repaired := requiredEnv(t, "GRAPHFIX_EXAMPLE_REPAIRED")
	expected := strings.Join(strings.Fields(requiredEnv(t, "GRAPHFIX_EXAMPLE_EXPECTED")), " ")
	code, ids, stderr := runExample(t, repaired)
	if code != 0 {
		t.Fatalf("./run %s exited %d:\n%s", repaired, code, stderr)
	}
	if ids != expected {
		t.Fatalf("./run %s printed\n  %s\nexpected\n  %s", repaired, ids, expected)
	}
}

func TestOriginalExportFailsWithOnnxruntimesError(t *testing.T) {
	original := requiredEnv(t, "GRAPHFIX_EXAMPLE_ORIGINAL")
	code, ids, stderr := runExample(t, original)
	if code != 1 {
		t.Fatalf("./run %s exited %d (want 1, onnxruntime failed), last line %q:\n%s", original, code, ids, stderr)
	}
	// onnxruntime's own message (e.g. "Non-zero status code returned while running MatMul node") is passed on.
	if !strings.Contains(stderr, "error: ") || !strings.Contains(stderr, "node") {
		t.Fatalf("./run %s failed without onnxruntime's error on stderr:\n%s", original, stderr)
	}
}

// variantOf links the repaired export's models into a temporary folder and writes the given configs there.
func variantOf(t *testing.T, repaired string, config, generationConfig map[string]any) string {
	t.Helper()
	folder := t.TempDir()
	models, err := filepath.Glob(filepath.Join(repaired, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, model := range models {
		if strings.HasSuffix(model, "config.json") {
			continue
		}
		absolute, err := filepath.Abs(model)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(absolute, filepath.Join(folder, filepath.Base(model))); err != nil {
			t.Fatal(err)
		}
	}
	for name, values := range map[string]map[string]any{"config.json": config, "generation_config.json": generationConfig} {
		text, err := json.Marshal(values)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(folder, name), text, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return folder
}

func TestForcedFirstTokenAndMaxLengthAreHonoured(t *testing.T) {
	repaired := requiredEnv(t, "GRAPHFIX_EXAMPLE_REPAIRED")
	expected := strings.Fields(requiredEnv(t, "GRAPHFIX_EXAMPLE_EXPECTED"))
	config := map[string]any{}
	text, err := os.ReadFile(filepath.Join(repaired, "config.json"))
	if err == nil {
		err = json.Unmarshal(text, &config)
	}
	if err != nil {
		t.Fatal(err)
	}
	start, _ := strconv.Atoi(expected[0])
	first, _ := strconv.Atoi(expected[1])
	forced := (first+1)%3 + 3 // not the token the model picks first
	config["max_length"] = 3
	generation := map[string]any{"decoder_start_token_id": start, "eos_token_id": []int{-1}, "forced_bos_token_id": forced}
	code, ids, stderr := runExample(t, variantOf(t, repaired, config, generation))
	if code != 0 || !strings.HasPrefix(ids, fmt.Sprintf("%d %d ", start, forced)) || len(strings.Fields(ids)) != 3 {
		t.Fatalf("with forced_bos_token_id %d and max_length 3, ./run exited %d and printed %q:\n%s", forced, code, ids, stderr)
	}
}
