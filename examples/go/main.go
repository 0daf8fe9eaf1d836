// Greedy decoding of a graphfix-repaired Optimum export with onnxruntime_go: the plain present->past loop.
//
//	greedy-decode --onnxruntime-library PATH [--max-new-tokens N] [--ignore-eos] MODEL_DIR [TOKEN_ID ...]
//
// Normally started by ./run, which builds this program, finds the onnxruntime C library and passes its path.
// MODEL_DIR holds encoder_model.onnx, decoder_model_merged.onnx, config.json and (optionally)
// generation_config.json. Every input and output name comes from the model's own lists; nothing here is
// specific to one architecture. The last line of stdout is the decoder's sequence: the start token, then each
// generated id. On a model onnxruntime cannot run, onnxruntime's own error goes to stderr and the exit code is 1.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// The source ids used when none are given: the same in every example client.
var defaultSourceIDs = []int64{17, 42, 8, 61, 33, 5}

const (
	pastPrefix    = "past_key_values."
	presentPrefix = "present."
)

func main() {
	library := flag.String("onnxruntime-library", os.Getenv("ONNXRUNTIME_LIBRARY"),
		"path of libonnxruntime.so (./run passes it)")
	maxNewTokens := flag.Int("max-new-tokens", 32, "stop after this many generated tokens")
	ignoreEOS := flag.Bool("ignore-eos", false, "do not stop at eos_token_id (e.g. to reach step 3 on a model that picks EOS)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: greedy-decode --onnxruntime-library PATH [--max-new-tokens N] [--ignore-eos] MODEL_DIR [TOKEN_ID ...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 1 || *library == "" || *maxNewTokens < 1 {
		flag.Usage()
		os.Exit(2)
	}
	sourceIDs, err := parseTokenIDs(flag.Args()[1:])
	if err != nil {
		fail(2, err)
	}
	settings, err := readGenerationSettings(flag.Arg(0))
	if err != nil {
		fail(2, err)
	}
	if *ignoreEOS {
		settings.eosTokenIDs = nil
	}
	ort.SetSharedLibraryPath(*library)
	if err := ort.InitializeEnvironment(); err != nil {
		fail(1, err)
	}
	defer ort.DestroyEnvironment()
	fmt.Fprintf(os.Stderr, "onnxruntime %s from %s\n", ort.GetVersion(), *library)

	sequence, err := greedyDecode(flag.Arg(0), sourceIDs, settings, *maxNewTokens)
	if err != nil {
		fail(1, err)
	}
	words := make([]string, len(sequence))
	for i, id := range sequence {
		words[i] = strconv.FormatInt(id, 10)
	}
	fmt.Println(strings.Join(words, " "))
}

func fail(code int, err error) {
	fmt.Fprintf(os.Stderr, "error: %v\n", err)
	os.Exit(code)
}

func parseTokenIDs(args []string) ([]int64, error) {
	if len(args) == 0 {
		return defaultSourceIDs, nil
	}
	ids := make([]int64, len(args))
	for i, arg := range args {
		id, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("token id %q is not an integer", arg)
		}
		ids[i] = id
	}
	return ids, nil
}

// greedyDecode returns the decoder's sequence: decoder_start_token_id, then each chosen token.
func greedyDecode(modelDir string, sourceIDs []int64, settings generationSettings, maxNewTokens int) ([]int64, error) {
	hidden, err := runEncoder(filepath.Join(modelDir, "encoder_model.onnx"), sourceIDs)
	if err != nil {
		return nil, fmt.Errorf("encoder: %w", err)
	}
	defer hidden.Destroy()
	decoder, err := openDecoder(filepath.Join(modelDir, "decoder_model_merged.onnx"))
	if err != nil {
		return nil, err
	}
	defer decoder.session.Destroy()
	mask, err := ort.NewTensor(ort.NewShape(1, int64(len(sourceIDs))), ones(len(sourceIDs)))
	if err != nil {
		return nil, err
	}
	defer mask.Destroy()

	past, err := decoder.emptyPast()
	if err != nil {
		return nil, err
	}
	defer func() { destroyPast(past) }()
	sequence := []int64{settings.decoderStartTokenID}
	for step := 1; step <= maxNewTokens && !settings.reachedMaxLength(len(sequence)); step++ {
		logits, present, err := decoder.step(sequence[len(sequence)-1], step > 1, hidden, mask, past)
		if err != nil {
			return nil, fmt.Errorf("decoder step %d: %w", step, err)
		}
		destroyPast(past)
		// The whole cache for the next step: every present.X becomes past_key_values.X (encoder KV included).
		past = present
		next := argmaxLastPosition(logits)
		logits.Destroy()
		if step == 1 && settings.forcedBOSTokenID != nil {
			next = *settings.forcedBOSTokenID
		}
		sequence = append(sequence, next)
		if settings.isEOS(next) {
			break
		}
	}
	return sequence, nil
}

func ones(n int) []int64 {
	values := make([]int64, n)
	for i := range values {
		values[i] = 1
	}
	return values
}

// runEncoder feeds input_ids and attention_mask (those the encoder declares) and returns last_hidden_state.
func runEncoder(path string, sourceIDs []int64) (ort.Value, error) {
	inputs, outputs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, err
	}
	if !hasName(outputs, "last_hidden_state") {
		return nil, fmt.Errorf("%s has no output last_hidden_state", path)
	}
	shape := ort.NewShape(1, int64(len(sourceIDs)))
	names := make([]string, len(inputs))
	feeds := make([]ort.Value, len(inputs))
	defer func() { destroyAll(feeds) }()
	for i, input := range inputs {
		names[i] = input.Name
		switch input.Name {
		case "input_ids":
			feeds[i], err = ort.NewTensor(shape, append([]int64(nil), sourceIDs...))
		case "attention_mask":
			feeds[i], err = ort.NewTensor(shape, ones(len(sourceIDs)))
		default:
			err = fmt.Errorf("%s: encoder input %q is neither input_ids nor attention_mask", path, input.Name)
		}
		if err != nil {
			return nil, err
		}
	}
	session, err := ort.NewDynamicAdvancedSession(path, names, []string{"last_hidden_state"}, nil)
	if err != nil {
		return nil, err
	}
	defer session.Destroy()
	result := []ort.Value{nil}
	if err := session.Run(feeds, result); err != nil {
		return nil, err
	}
	return result[0], nil
}

func hasName(infos []ort.InputOutputInfo, name string) bool {
	for _, info := range infos {
		if info.Name == name {
			return true
		}
	}
	return false
}

// decoderSession is the merged decoder with its inputs and outputs in the order the model lists them.
type decoderSession struct {
	session *ort.DynamicAdvancedSession
	inputs  []ort.InputOutputInfo
	outputs []ort.InputOutputInfo
}

func openDecoder(path string) (*decoderSession, error) {
	inputs, outputs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, err
	}
	session, err := ort.NewDynamicAdvancedSession(path, infoNames(inputs), infoNames(outputs), nil)
	if err != nil {
		return nil, err
	}
	return &decoderSession{session: session, inputs: inputs, outputs: outputs}, nil
}

func infoNames(infos []ort.InputOutputInfo) []string {
	names := make([]string, len(infos))
	for i, info := range infos {
		names[i] = info.Name
	}
	return names
}

// [docs:empty-past]

// emptyPast is step 1's past: every past_key_values.* of shape (1, heads, 0, head_dim), heads and head_dim as
// the decoder declares them. onnxruntime_go accepts zero-size dimensions from v1.21.0 on (the pinned version is
// newer), so the past is truly empty; with use_cache_branch false the merged decoder ignores it anyway.
func (d *decoderSession) emptyPast() (map[string]ort.Value, error) {
	past := map[string]ort.Value{}
	for _, input := range d.inputs {
		if !strings.HasPrefix(input.Name, pastPrefix) {
			continue
		}
		dims := input.Dimensions
		if len(dims) != 4 || dims[1] <= 0 || dims[3] <= 0 {
			destroyPast(past)
			return nil, fmt.Errorf("decoder input %s has shape %v: heads and head_dim must be fixed numbers", input.Name, dims)
		}
		value, err := emptyTensor(ort.NewShape(1, dims[1], 0, dims[3]), input.DataType)
		if err != nil {
			destroyPast(past)
			return nil, fmt.Errorf("decoder input %s: %w", input.Name, err)
		}
		past[input.Name] = value
	}
	return past, nil
}

func emptyTensor(shape ort.Shape, dataType ort.TensorElementDataType) (ort.Value, error) {
	switch dataType {
	case ort.TensorElementDataTypeFloat:
		return ort.NewEmptyTensor[float32](shape)
	case ort.TensorElementDataTypeFloat16:
		// CustomDataTensor wants at least one byte even when the shape holds no element.
		return ort.NewCustomDataTensor(shape, make([]byte, 2), dataType)
	}
	return nil, fmt.Errorf("unsupported element type %v", dataType)
}

// [/docs:empty-past]

// step runs the decoder once and returns the logits and the present.* outputs renamed past_key_values.*.
func (d *decoderSession) step(token int64, useCache bool, hidden, mask ort.Value,
	past map[string]ort.Value) (*ort.Tensor[float32], map[string]ort.Value, error) {
	created := []ort.Value{}
	defer func() { destroyAll(created) }()
	// [docs:feeds]
	feeds := make([]ort.Value, len(d.inputs))
	for i, input := range d.inputs {
		var err error
		switch name := input.Name; {
		case name == "input_ids":
			feeds[i], err = ort.NewTensor(ort.NewShape(1, 1), []int64{token})
			created = append(created, feeds[i])
		case name == "use_cache_branch":
			feeds[i], err = ort.NewTensor(ort.NewShape(1), []bool{useCache})
			created = append(created, feeds[i])
		case name == "encoder_hidden_states":
			feeds[i] = hidden
		case name == "encoder_attention_mask":
			feeds[i] = mask
		case strings.HasPrefix(name, pastPrefix) && past[name] != nil:
			feeds[i] = past[name]
		default:
			err = fmt.Errorf("no value for decoder input %q", name)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	results := make([]ort.Value, len(d.outputs))
	if err := d.session.Run(feeds, results); err != nil {
		return nil, nil, err
	}
	// [/docs:feeds]
	var logits *ort.Tensor[float32]
	present := map[string]ort.Value{}
	for i, output := range d.outputs {
		switch name := output.Name; {
		case name == "logits":
			logits, _ = results[i].(*ort.Tensor[float32])
			if logits == nil {
				created = append(created, results[i])
			}
		case strings.HasPrefix(name, presentPrefix):
			present[pastPrefix+strings.TrimPrefix(name, presentPrefix)] = results[i]
		default:
			created = append(created, results[i])
		}
	}
	if logits == nil {
		destroyPast(present)
		return nil, nil, errors.New("the decoder has no float32 output named logits")
	}
	return logits, present, nil
}

// argmaxLastPosition is argmax(logits[0, -1, :]); ties go to the lowest index, as numpy's argmax.
func argmaxLastPosition(logits *ort.Tensor[float32]) int64 {
	shape := logits.GetShape()
	vocab := int(shape[len(shape)-1])
	data := logits.GetData()
	last := data[len(data)-vocab:]
	best := 0
	for i, score := range last {
		if score > last[best] {
			best = i
		}
	}
	return int64(best)
}

func destroyAll(values []ort.Value) {
	for _, value := range values {
		if value != nil {
			value.Destroy()
		}
	}
}

func destroyPast(past map[string]ort.Value) {
	for _, value := range past {
		value.Destroy()
	}
}
