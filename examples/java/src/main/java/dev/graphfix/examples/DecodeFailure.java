package dev.graphfix.examples;

import ai.onnxruntime.OrtException;

/** onnxruntime refused the export: at load or in the encoder ({@code step == 0}), or at a decoder step (from 1). */
public final class DecodeFailure extends Exception {
    private static final long serialVersionUID = 1L;

    /** 0 when a session could not be created or the encoder failed, else the decoder step that failed. */
    public final int step;

    DecodeFailure(int step, String what, OrtException cause) {
        super(what + ": " + cause.getMessage(), cause);
        this.step = step;
    }
}
