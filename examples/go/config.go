package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// generationSettings are the config keys the greedy loop uses.
type generationSettings struct {
	decoderStartTokenID int64
	eosTokenIDs         []int64
	forcedBOSTokenID    *int64 // nil: no forced first token
	maxLength           int    // 0: no limit from the config
}

func (s generationSettings) isEOS(token int64) bool {
	for _, eos := range s.eosTokenIDs {
		if token == eos {
			return true
		}
	}
	return false
}

func (s generationSettings) reachedMaxLength(sequenceLength int) bool {
	return s.maxLength > 0 && sequenceLength >= s.maxLength
}

// readGenerationSettings reads config.json, then generation_config.json (optional) over it, as transformers
// does: a key present in generation_config.json, null included, replaces config.json's.
func readGenerationSettings(modelDir string) (generationSettings, error) {
	keys := map[string]json.RawMessage{}
	for _, name := range []string{"config.json", "generation_config.json"} {
		path := filepath.Join(modelDir, name)
		text, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) && name == "generation_config.json" {
			continue
		}
		if err != nil {
			return generationSettings{}, err
		}
		fileKeys := map[string]json.RawMessage{}
		if err := json.Unmarshal(text, &fileKeys); err != nil {
			return generationSettings{}, fmt.Errorf("%s: %w", path, err)
		}
		for key, value := range fileKeys {
			keys[key] = value
		}
	}
	var settings generationSettings
	var start *int64
	if err := decodeKey(keys, "decoder_start_token_id", &start); err != nil {
		return settings, err
	}
	if start == nil {
		return settings, fmt.Errorf("no decoder_start_token_id in %s/config.json or generation_config.json", modelDir)
	}
	settings.decoderStartTokenID = *start
	if err := decodeKey(keys, "forced_bos_token_id", &settings.forcedBOSTokenID); err != nil {
		return settings, err
	}
	var maxLength *int
	if err := decodeKey(keys, "max_length", &maxLength); err != nil {
		return settings, err
	}
	if maxLength != nil {
		settings.maxLength = *maxLength
	}
	// eos_token_id is an int, or a list of ints in generation_config.json.
	var eos *int64
	if decodeKey(keys, "eos_token_id", &eos) == nil {
		if eos != nil {
			settings.eosTokenIDs = []int64{*eos}
		}
	} else if err := decodeKey(keys, "eos_token_id", &settings.eosTokenIDs); err != nil {
		return settings, fmt.Errorf("eos_token_id is neither an integer nor a list of integers: %w", err)
	}
	return settings, nil
}

// decodeKey decodes keys[key] into target; a missing key leaves target as it is.
func decodeKey(keys map[string]json.RawMessage, key string, target any) error {
	raw, found := keys[key]
	if !found {
		return nil
	}
	if err := json.Unmarshal(raw, target); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}
