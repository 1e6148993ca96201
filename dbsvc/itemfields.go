package dbsvc

import (
	"errors"
	"fmt"
	"strings"
)

// ItemFields holds some or all of an item's fields, each nil when absent:
// the body of POST /items and PUT /items/{id} (where Complete requires
// every field) and the changes of PATCH /items/{id} (where an absent field
// keeps its value). JSON null decodes as absent: a PATCH body that sets a
// field to null is refused before it gets here (items have no optional
// fields to remove).
type ItemFields struct {
	Name       *string `json:"name,omitempty"`
	PriceCents *int64  `json:"price_cents,omitempty"`
	Stock      *int64  `json:"stock,omitempty"`
}

// fields returns u with every field present.
func (u ItemUpdate) fields() ItemFields {
	return ItemFields{Name: &u.Name, PriceCents: &u.PriceCents, Stock: &u.Stock}
}

// empty reports whether f changes nothing.
func (f ItemFields) empty() bool {
	return f.Name == nil && f.PriceCents == nil && f.Stock == nil
}

// Complete returns f as a whole item, checked by ItemUpdate.Validate, or
// an error naming every field f lacks: a body that replaces or creates an
// item must hold all of them, since a missing one would otherwise be
// stored as zero.
func (f ItemFields) Complete() (ItemUpdate, error) {
	var missing []string
	if f.Name == nil {
		missing = append(missing, "name")
	}
	if f.PriceCents == nil {
		missing = append(missing, "price_cents")
	}
	if f.Stock == nil {
		missing = append(missing, "stock")
	}
	if len(missing) > 0 {
		return ItemUpdate{}, fmt.Errorf("missing (or null) required %s %s: an item has name, price_cents and stock, none of them optional",
			plural(len(missing), "field", "fields"), strings.Join(missing, ", "))
	}
	u := ItemUpdate{Name: *f.Name, PriceCents: *f.PriceCents, Stock: *f.Stock}
	if err := u.Validate(); err != nil {
		return ItemUpdate{}, err
	}
	return u, nil
}

// plural returns one when n is 1, else many.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Validate reports the first problem with a field f holds, or nil; absent
// fields are not checked (Complete is what requires them).
func (f ItemFields) Validate() error {
	switch {
	case f.Name != nil && *f.Name == "":
		return errors.New("name must not be empty")
	case f.Name != nil && len(*f.Name) > MaxNameLen:
		return fmt.Errorf("name must be at most %d bytes, not %d", MaxNameLen, len(*f.Name))
	case f.PriceCents != nil && *f.PriceCents < 0:
		return errors.New("price_cents must be >= 0: it is a price in cents")
	case f.Stock != nil && *f.Stock < 0:
		return errors.New("stock must be >= 0: it counts units in stock")
	}
	return nil
}
