package sengo

import "github.com/sengo-relay/sengo-relay/event"

// Base URLs of SenGo's API.
const (
	SandboxBaseURL    = "https://api.sandbox.sengo.id/api"
	ProductionBaseURL = "https://api.sengo.id/api"
)

// AdditionalInfo carries the callback URL of a transaction.
type AdditionalInfo struct {
	Callback string `json:"callback"`
}

// Request bodies, with fields in the order SenGo documents them (the
// signature covers the bytes as sent, so order only matters for parity).

// RetailRequest creates a retail counter payment (POST /retail).
type RetailRequest struct {
	Reference      string         `json:"reference"`
	PhoneNumber    string         `json:"phoneNumber"`
	Channel        string         `json:"channel"` // alfamart, indomaret
	Amount         int64          `json:"amount"`
	ExpiryMinutes  int            `json:"expiryMinutes,omitempty"`
	ViewName       string         `json:"viewName"`
	AdditionalInfo AdditionalInfo `json:"additionalInfo"`
}

// VirtualAccountRequest creates a virtual account (POST /virtual-account).
type VirtualAccountRequest struct {
	Reference      string         `json:"reference"`
	BankCode       string         `json:"bankCode"`
	ViewName       string         `json:"viewName"`
	Type           string         `json:"type"` // ClosedAmount
	Amount         int64          `json:"amount"`
	ExpiryMinutes  int            `json:"expiryMinutes,omitempty"`
	AdditionalInfo AdditionalInfo `json:"additionalInfo"`
}

// EWalletRequest creates an e-wallet payment (POST /e-wallet). [guess: shape
// follows retail]
type EWalletRequest struct {
	Reference      string         `json:"reference"`
	PhoneNumber    string         `json:"phoneNumber"`
	Channel        string         `json:"channel"` // ovo, dana, shopeepay, linkaja, gopay
	Amount         int64          `json:"amount"`
	ExpiryMinutes  int            `json:"expiryMinutes,omitempty"`
	ViewName       string         `json:"viewName"`
	AdditionalInfo AdditionalInfo `json:"additionalInfo"`
}

// QRISRequest creates a QRIS payment (POST /qris). [guess]
type QRISRequest struct {
	Reference      string         `json:"reference"`
	Amount         int64          `json:"amount"`
	ExpiryMinutes  int            `json:"expiryMinutes,omitempty"`
	ViewName       string         `json:"viewName"`
	AdditionalInfo AdditionalInfo `json:"additionalInfo"`
}

// DisbursementRequest pays out to a bank account (POST /disburse). [guess]
type DisbursementRequest struct {
	Reference        string         `json:"reference"`
	BankCode         string         `json:"bankCode"`
	RecipientAccount string         `json:"recipientAccount"`
	RecipientName    string         `json:"recipientName"`
	Amount           int64          `json:"amount"`
	AdditionalInfo   AdditionalInfo `json:"additionalInfo"`
}

// ProjectRequest creates a project (POST /projects).
type ProjectRequest struct {
	Name   string   `json:"name"`
	Domain string   `json:"domain"`
	IP     []string `json:"ip"`
}

// Project is a SenGo project.
type Project struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Domain string   `json:"domain"`
	IP     []string `json:"ip"`
	Status string   `json:"status"`
}

// Balance of a project, in rupiah.
type Balance struct {
	Active  int64 `json:"active"`
	Pending int64 `json:"pending"`
	Total   int64 `json:"total"`
}

// Transfer directions for ListQuery.Type.
const (
	CashIn  = "cashIn"
	CashOut = "cashOut"
)

// ListQuery filters GET /transactions. SenGo keeps records for 7 days.
type ListQuery struct {
	Page   int          // from 1
	Status event.Status // optional
	Date   string       // YYYY-MM-DD, optional
	Type   string       // CashIn or CashOut, optional
}

// Bank codes SenGo lists for virtual accounts and disbursements.
var BankCodes = map[string]string{
	"008": "Mandiri", "014": "BCA", "002": "BRI", "009": "BNI", "013": "Permata",
	"011": "Danamon", "022": "CIMB", "153": "Sahabat Sampoerna",
}

// Channels per product.
var (
	RetailChannels  = []string{"alfamart", "indomaret"}
	EWalletChannels = []string{"ovo", "dana", "shopeepay", "linkaja", "gopay"}
)
