package strictjson

import (
	"encoding/json"
	"errors"
	"io"
)

// ErrTrailingData is returned (wrapped) when something follows the value.
var ErrTrailingData = errors.New("strictjson: data after the JSON value")

// Decode reads one JSON value from r into v, refusing unknown object
// fields and trailing data. Errors of r (a size limit, say) come back as
// they are, so callers can tell them apart.
func Decode(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	switch _, err := dec.Token(); {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return ErrTrailingData
	default:
		return err
	}
}
