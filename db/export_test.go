package db

// Exported for the external tests of this package.
var (
	EncodeActionCounts = encodeActionCounts
	DecodeActionCounts = decodeActionCounts
	ActionCodes        = actionCodes
)

var (
	FastScan         = fastScan
	ParseFlatStrings = parseFlatStrings
	ParseFlatObject  = parseFlatObject
)
