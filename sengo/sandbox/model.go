package sandbox

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"time"

	"github.com/sengo-relay/sengo-relay/sengo"
)

// wib is Western Indonesia Time: SenGo writes dates with +07:00.
var wib = time.FixedZone("WIB", 7*3600)

// Project is a sandbox project: credentials, allowed networks, balance.
type Project struct {
	Key        string   `json:"key"`
	Token      string   `json:"token"`
	Name       string   `json:"name"`
	AllowedIPs []string `json:"allowedIps,omitempty"` // empty: any
	Active     int64    `json:"active"`
	Pending    int64    `json:"pending"`
}

// tx is a stored transaction.
type tx struct {
	Project     string    `json:"project"` // key
	Created     time.Time `json:"created"`
	Kind        string    `json:"kind"` // retail, virtualAccount, eWallet, qris, disbursement
	Object      object    `json:"object"`
	CallbackURL string    `json:"callbackUrl"`
}

// object is SenGo's transaction object as the sandbox writes it.
type object struct {
	ID             string               `json:"id"`
	MerchantRef    string               `json:"merchantRef"`
	Status         string               `json:"status"`
	FeePayer       string               `json:"feePayer"`
	Amount         int64                `json:"amount"`
	Fee            int64                `json:"fee"`
	TotalAmount    int64                `json:"totalAmount"`
	ExpiredDate    *string              `json:"expiredDate"`
	PaidDate       *string              `json:"paidDate"`
	SettleDate     *string              `json:"settleDate"`
	AdditionalInfo sengo.AdditionalInfo `json:"additionalInfo"`
	Retail         *retailInfo          `json:"retail,omitempty"`
	VirtualAccount *vaInfo              `json:"virtualAccount,omitempty"`
	EWallet        *eWalletInfo         `json:"eWallet,omitempty"`
	QRIS           *qrisInfo            `json:"qris,omitempty"`
	Disbursement   *disbursementInfo    `json:"disbursement,omitempty"`
}

type retailInfo struct {
	ViewName    string `json:"viewName"`
	Channel     string `json:"channel"`
	PaymentCode string `json:"paymentCode"`
}

type vaInfo struct {
	BankCode string `json:"bankCode"`
	VANumber string `json:"vaNumber"`
	ViewName string `json:"viewName"`
}

type eWalletInfo struct {
	ViewName string `json:"viewName"`
	Channel  string `json:"channel"`
	URL      string `json:"url"`
}

type qrisInfo struct {
	Content string `json:"content"`
	Image   string `json:"image"`
	URL     string `json:"url"`
}

type disbursementInfo struct {
	BankCode         string `json:"bankCode"`
	RecipientAccount string `json:"recipientAccount"`
	RecipientName    string `json:"recipientName"`
}

// Fees of the sandbox, in rupiah: documented in the README. Real fees are
// in each merchant's SenGo contract.
func fee(kind, channel string, amount int64) int64 {
	switch kind {
	case "retail":
		if channel == "indomaret" {
			return amount / 100 // 1%
		}
		return 85
	case "virtualAccount":
		return 4000
	case "eWallet":
		return amount / 100 // 1%
	case "qris":
		return amount * 7 / 1000 // 0.7%
	case "disbursement":
		return 3000
	}
	return 0
}

// digits returns n random decimal digits.
func digits(n int) string {
	b := make([]byte, n)
	for i := range b {
		d, _ := rand.Int(rand.Reader, big.NewInt(10))
		b[i] = byte('0' + d.Int64())
	}
	return string(b)
}

// paymentCode is what the customer tells the cashier.
func paymentCode(channel string) string {
	if channel == "indomaret" {
		return "IDM" + digits(10)
	}
	return digits(11)
}

// vaPrefix is a per-bank prefix of sandbox VA numbers.
var vaPrefix = map[string]string{"008": "8908", "014": "0367", "002": "2626", "009": "9880", "013": "8625", "011": "7915", "022": "5919", "153": "1530"}

func vaNumber(bank string) string { return vaPrefix[bank] + digits(8) }

func stamp(t time.Time) *string {
	s := t.In(wib).Format(time.RFC3339)
	return &s
}

func qrisContent(ref string, amount int64) string {
	return fmt.Sprintf("00020101021226670016ID.CO.SENGO.WWW0118936000000000000000215SANDBOX%s5303360540%d5802ID5913SENGO SANDBOX6007JAKARTA6304ABCD", ref, amount)
}
