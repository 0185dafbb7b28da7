package db

// Exported for the external tests of this package.
var (
	EncodeActionCounts = encodeActionCounts
	DecodeActionCounts = decodeActionCounts
	ActionCodes        = actionCodes
)
