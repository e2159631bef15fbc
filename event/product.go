package event

// Product is the kind of SenGo transaction. Its value is the token used in
// event subjects (sengo.events.<project>.<product>.<status>).
type Product string

// The products SenGo offers. CreditCard is known only from the engine SenGo
// runs on; it is accepted so that such callbacks are not lost.
const (
	ProductRetail         Product = "retail"
	ProductVirtualAccount Product = "virtual_account"
	ProductEWallet        Product = "ewallet"
	ProductQRIS           Product = "qris"
	ProductDisbursement   Product = "disbursement"
	ProductCreditCard     Product = "credit_card"
)

// Products lists every known product.
var Products = []Product{
	ProductRetail, ProductVirtualAccount, ProductEWallet,
	ProductQRIS, ProductDisbursement, ProductCreditCard,
}
