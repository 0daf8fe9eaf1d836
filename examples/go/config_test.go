package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func writeConfigs(t *testing.T, config, generationConfig string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if generationConfig != "" {
		if err := os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(generationConfig), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestGenerationConfigOverridesConfigIncludingNull(t *testing.T) {
	dir := writeConfigs(t,
		`{"decoder_start_token_id": 2, "eos_token_id": 2, "forced_bos_token_id": 7, "max_length": 200,
		  "task_specific_params": {"translation": {"eos_token_id": 99, "max_length": 5}}}`,
		`{"eos_token_id": [2, 3], "forced_bos_token_id": null}`)
	settings, err := readGenerationSettings(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := generationSettings{decoderStartTokenID: 2, eosTokenIDs: []int64{2, 3}, maxLength: 200}
	if !reflect.DeepEqual(settings, want) {
		t.Fatalf("got %+v, want %+v", settings, want)
	}
}

func TestConfigAloneGivesStartEosAndForcedToken(t *testing.T) {
	settings, err := readGenerationSettings(writeConfigs(t,
		`{"decoder_start_token_id": 0, "eos_token_id": 1, "forced_bos_token_id": 250004}`, ""))
	if err != nil {
		t.Fatal(err)
	}
	if settings.decoderStartTokenID != 0 || !settings.isEOS(1) || settings.isEOS(0) ||
		settings.forcedBOSTokenID == nil || *settings.forcedBOSTokenID != 250004 || settings.reachedMaxLength(1000) {
		t.Fatalf("got %+v", settings)
	}
}

func TestMissingDecoderStartTokenIsAnError(t *testing.T) {
	if _, err := readGenerationSettings(writeConfigs(t, `{"eos_token_id": 1}`, "")); err == nil {
		t.Fatal("no error without decoder_start_token_id")
	}
}
